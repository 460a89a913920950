//! `infraveil mcp`: an MCP server over stdio that an agent runtime
//! launches, giving an AI agent a first-class door to the database that is
//! still the firewall's door. It is a CLIENT of the firewall: it connects
//! like psql would, with the agent's own grant (identity as user, grant
//! secret as password), so every tool call is inspected, held and audited
//! as any session is, and it holds no privileges of its own. Answers only
//! the firewall has (risk check, proposals, approval status, who am I) come
//! from the firewall's self-service admin API, signed in with that same
//! grant. It never talks to PostgreSQL directly.
//!
//! Tools: `query`, `check`, `propose`, `status`, `describe`, `whoami`
//! (see `tools`). Resources: the tables this identity may read, with
//! their columns.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, Implementation, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ReadResourceResult, Resource, ResourceContents, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};

mod api;
mod conn;
mod failure;
mod tools;
mod values;

pub use conn::Target;

#[derive(Debug, thiserror::Error)]
pub enum McpError {
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error("cannot read the grant file {path}: {why}")]
    GrantFile { path: String, why: String },
    #[error("no database URL: pass --database-url, --grant-file, or set DATABASE_URL")]
    NoUrl,
    #[error("admin API client: {0}")]
    Http(String),
    #[error("MCP transport: {0}")]
    Transport(String),
}

/// How `infraveil mcp` was started.
pub struct Options {
    pub database_url: String,
    /// The firewall's admin API (`VEIL_ADMIN_URL`), for `check`, `propose`,
    /// `status` and `whoami`.
    pub admin_url: Option<String>,
}

/// The database URL in a grant file: the JSON `veilctl --output json
/// grants issue` prints (its `database_url`), a `DATABASE_URL=...` line, or
/// the URL alone.
pub fn url_from_grant_file(path: &std::path::Path) -> Result<String, McpError> {
    let err = |why: String| McpError::GrantFile {
        path: path.display().to_string(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
        return v["database_url"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| err("the JSON has no database_url".into()));
    }
    for line in text.lines() {
        let line = line.trim().trim_start_matches("export ");
        let value = line.strip_prefix("DATABASE_URL=").unwrap_or(line);
        let value = value.trim_matches(|c| c == '\'' || c == '"');
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Ok(value.to_owned());
        }
    }
    Err(err("no postgres:// URL in it".into()))
}

/// The MCP server's state: the firewall connection and its admin API.
pub struct Server {
    conn: conn::Conn,
    api: Option<api::SelfApi>,
}

impl Server {
    pub fn new(opts: &Options) -> Result<Server, McpError> {
        crate::net::tls::install_default_provider();
        let target = Target::from_url(&opts.database_url)?;
        let api = match &opts.admin_url {
            Some(u) if !u.trim().is_empty() => Some(
                api::SelfApi::new(u, &target.identity, &target.secret, &target.database)
                    .map_err(McpError::Http)?,
            ),
            _ => None,
        };
        Ok(Server {
            conn: conn::Conn::new(target),
            api,
        })
    }
}

/// Serve MCP on stdin/stdout until the client goes away.
pub async fn run(opts: Options) -> Result<(), McpError> {
    let server = Handler(Arc::new(Server::new(&opts)?));
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError::Transport(e.to_string()))?;
    running
        .waiting()
        .await
        .map_err(|e| McpError::Transport(e.to_string()))?;
    Ok(())
}

/// The rmcp handler around the shared server.
#[derive(Clone)]
struct Handler(Arc<Server>);

const INSTRUCTIONS: &str = "You reach a PostgreSQL database through the Infraveil firewall, \
as your own identity with a time-limited grant. Every statement is checked against your \
policy and recorded in a signed audit log. Reads usually run; statements that change data \
may be held for a human: use `check` to see how a statement would be judged, `propose` to ask \
for approval, `status` to follow the request, then `query` with the identical statement. \
Denials are final for that statement: do not try to work around them.";

const TABLE_URI: &str = "infraveil://table/";

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("infraveil", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools::list()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let result = self
            .0
            .dispatch(&request.name, &args, context.ct.clone())
            .await;
        Ok(match result {
            Ok(v) => CallToolResult::structured(v),
            Err(f) => {
                tracing::info!(tool = %request.name, error = %f.0["error"], "tool call refused or failed");
                CallToolResult::structured_error(f.0)
            }
        }
        .into())
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let tables = self
            .0
            .tables()
            .await
            .map_err(|f| ErrorData::internal_error(f.0["message"].to_string(), Some(f.0)))?;
        let resources = tables
            .iter()
            .filter(|t| t["readable"] == true)
            .map(|t| {
                let name = format!(
                    "{}.{}",
                    t["schema"].as_str().unwrap_or(""),
                    t["name"].as_str().unwrap_or("")
                );
                Resource::new(format!("{TABLE_URI}{name}"), name.clone())
                    .with_description(format!("{name}: its columns and primary key (JSON)"))
                    .with_mime_type("application/json")
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let Some(table) = request.uri.strip_prefix(TABLE_URI) else {
            return Err(ErrorData::invalid_params(
                format!("unknown resource {}", request.uri),
                None,
            ));
        };
        let v = self
            .0
            .describe_table(table)
            .await
            .map_err(|f| ErrorData::invalid_params(f.0["message"].to_string(), Some(f.0)))?;
        Ok(ReadResourceResult::new(vec![
            ResourceContents::text(v.to_string(), request.uri.clone())
                .with_mime_type("application/json"),
        ])
        .into())
    }
}
