// HikariCP (on pgjdbc) across a grant's expiry.
//
// Run by tests/pools.rs like sqlalchemy_pool.py: JDBC_URL without
// credentials, grants asked from the admin API (ADMIN_URL, ADMIN_TOKEN),
// the pool's password changed at run time through its MXBean. Checks that a
// borrowed connection at expiry fails with SQLSTATE 57P01 and Hikari evicts
// it, that new connections with the old grant fail with 28P01, and that
// after a fresh grant the same pool serves connections again.

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import org.postgresql.ds.PGSimpleDataSource;

public class HikariExpiry {
    static void ok(String what) {
        System.out.println("ok: " + what);
        System.out.flush();
    }

    static void check(boolean cond, Object what) {
        if (!cond) {
            throw new AssertionError(String.valueOf(what));
        }
    }

    /** A grant for alice in role writer: {id, password}. */
    static String[] issue(String ttl) throws Exception {
        String body = "{\"identity\":\"alice\",\"role\":\"writer\",\"ttl\":\"" + ttl + "\",\"issued_by\":\"pool test\"}";
        HttpRequest req = HttpRequest.newBuilder(URI.create(System.getenv("ADMIN_URL") + "/v1/grants"))
            .header("Authorization", "Bearer " + System.getenv("ADMIN_TOKEN"))
            .header("Content-Type", "application/json")
            .POST(HttpRequest.BodyPublishers.ofString(body))
            .build();
        HttpResponse<String> r = HttpClient.newHttpClient().send(req, HttpResponse.BodyHandlers.ofString());
        check(r.statusCode() == 201, r.body());
        return new String[] {field(r.body(), "id"), field(r.body(), "password")};
    }

    static String field(String json, String name) {
        Matcher m = Pattern.compile("\"" + name + "\":\"([^\"]*)\"").matcher(json);
        check(m.find(), json);
        return m.group(1);
    }

    static int one(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            check(rs.next(), "no row");
            return rs.getInt(1);
        }
    }

    /** The SQLSTATE of `e` or of the first cause that has one. */
    static String state(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof SQLException && ((SQLException) t).getSQLState() != null) {
                return ((SQLException) t).getSQLState();
            }
        }
        return null;
    }

    public static void main(String[] args) throws Exception {
        String[] g = issue("3s");
        long expires = System.currentTimeMillis() + 3000;
        HikariConfig cfg = new HikariConfig();
        // A DataSource rather than a jdbcUrl: HikariCP 2.7's own driver
        // wrapper keeps the password it started with, so a password set
        // through the MXBean would never reach new connections.
        PGSimpleDataSource pg = new PGSimpleDataSource();
        pg.setURL(System.getenv("JDBC_URL"));
        cfg.setDataSource(pg);
        cfg.setUsername("alice");
        cfg.setPassword(g[1]);
        cfg.setMaximumPoolSize(2);
        cfg.setMinimumIdle(2);
        cfg.setConnectionTimeout(3000);
        cfg.setValidationTimeout(1000);
        try (HikariDataSource ds = new HikariDataSource(cfg)) {
            java.util.Properties pom = new java.util.Properties();
            try (java.io.InputStream in = HikariDataSource.class.getResourceAsStream("/META-INF/maven/com.zaxxer/HikariCP/pom.properties")) {
                if (in != null) {
                    pom.load(in);
                }
            }
            System.out.println("HikariCP " + pom.getProperty("version") + ", pgjdbc " + org.postgresql.util.DriverInfo.DRIVER_VERSION);
            try (Connection a = ds.getConnection(); Connection b = ds.getConnection()) {
                check(one(a, "SELECT 1") == 1, "SELECT 1");
                try (Statement st = b.createStatement()) {
                    st.execute("INSERT INTO items (id, name) VALUES (1, 'before')");
                }
            }
            ok("a HikariCP pool of 2 in use with grant " + g[0]);

            Connection held = ds.getConnection();
            Thread.sleep(expires - System.currentTimeMillis() + 2500); // ended within about a second
            try {
                one(held, "SELECT 1");
                throw new AssertionError("the session outlived its grant");
            } catch (SQLException e) {
                check("57P01".equals(e.getSQLState()), e.getSQLState() + ": " + e.getMessage());
                check(e.getMessage().contains("expired"), e.getMessage());
            }
            held.close();
            ok("a borrowed connection at expiry fails with FATAL 57P01 (grant expired); Hikari evicts it");

            try (Connection c = ds.getConnection()) {
                one(c, "SELECT 1");
                throw new AssertionError("connected with an expired grant");
            } catch (SQLException e) {
                check("28P01".equals(state(e)), state(e) + ": " + e);
            }
            ok("new connections with the expired grant are refused (28P01)");

            String[] g2 = issue("60s");
            ds.getHikariConfigMXBean().setPassword(g2[1]);
            int n = -1;
            for (int i = 0; i < 10 && n < 0; i++) {
                try (Connection c = ds.getConnection()) {
                    try (Statement st = c.createStatement()) {
                        st.execute("INSERT INTO items (id, name) VALUES (2, 'after')");
                    }
                    n = one(c, "SELECT count(*) FROM items");
                } catch (SQLException e) {
                    check("28P01".equals(state(e)), state(e) + ": " + e); // an attempt begun before the change
                }
            }
            check(n == 2, "rows: " + n);
            ok("with a fresh grant (" + g2[0] + ") the same pool serves connections again");
        }
    }
}
