//! Ends live sessions whose grant expired or was revoked, and logs each
//! expiry once. Runs every quarter second, so a session outlives its grant
//! by at most that (plus the time to deliver the FATAL error). Closes the
//! row-estimate side connections left idle, too.

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use crate::auth::CredentialState;
use crate::shutdown::{Phase, Shutdown};

use crate::grants::{Grants, session_ended};

const TICK: Duration = Duration::from_millis(250);

/// Run until the firewall closes.
pub async fn sweeper(grants: Arc<Grants>, shared: Arc<Shared>, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.reached(Phase::Closing) => return,
        }
        for g in grants.newly_expired() {
            tracing::info!(grant = %g.id, identity = %g.identity, role = %g.role, "grant expired");
            let _ = grants
                .audit()
                .enqueue(crate::audit::Event::GrantExpired {
                    grant: g.id,
                    identity: g.identity,
                })
                .await;
        }
        shared.planner.close_idle();
        let ended = shared.registry.end_sessions(|credential_id| {
            match shared.credentials.state(credential_id) {
                CredentialState::Active => None,
                state => Some(session_ended(credential_id, &state)),
            }
        });
        if ended > 0 {
            tracing::info!(
                sessions = ended,
                "ended sessions whose grant is no longer valid"
            );
        }
    }
}
