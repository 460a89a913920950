// pgjdbc through the firewall, as its users drive it every day.
//
// Run by tests/clients.rs with `java -cp postgresql.jar PgjdbcSuite.java`
// (single-file source launch: needs a JDK) and JDBC_URL / JDBC_AGENT_URL:
// the demo's URL with `jdbc:postgresql://` in front and user and password
// as parameters (same tables, identities and held statements as the Python
// suites). Prints one `ok:` line per check; any failure exits 1.

import java.io.ByteArrayOutputStream;
import java.io.StringReader;
import java.math.BigDecimal;
import java.security.SecureRandom;
import java.sql.Array;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Savepoint;
import java.sql.Statement;
import java.sql.Timestamp;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.UUID;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;
import org.postgresql.util.PSQLException;

public class PgjdbcSuite {
    static final String URL = System.getenv("JDBC_URL");
    static final String AGENT_URL = System.getenv("JDBC_AGENT_URL");

    static void ok(String what) {
        System.out.println("ok: " + what);
        System.out.flush();
    }

    static void check(boolean cond, Object what) {
        if (!cond) {
            throw new AssertionError(String.valueOf(what));
        }
    }

    static void eq(Object want, Object got) {
        check(java.util.Objects.equals(want, got), "want " + want + ", got " + got);
    }

    /** The SQLSTATE `sql` fails with (it must fail). */
    static String failsWith(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement()) {
            st.execute(sql);
        } catch (SQLException e) {
            return e.getSQLState();
        }
        throw new AssertionError("ran: " + sql);
    }

    static Object one(Connection c, String sql) throws SQLException {
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            check(rs.next(), "no row: " + sql);
            return rs.getObject(1);
        }
    }

    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(URL)) {
            System.out.println("pgjdbc " + c.getMetaData().getDriverVersion() + ", Java "
                + System.getProperty("java.version"));
            // The firewall refuses plain TCP, so this session is TLS.
            try (Connection plain = DriverManager.getConnection(URL.replace("sslmode=verify-full", "sslmode=disable"))) {
                throw new AssertionError("connected without TLS");
            } catch (PSQLException e) {
                check(e.getMessage().contains("TLS"), e.getMessage());
            }
            ok("connect with jdbc: and the demo's URL, TLS verified (sslmode=verify-full)");
            types(c);
            transactions(c);
            errorsThenWork(c);
            preparedReuse(c);
            copyInAndOut(c);
            batch(c);
            cursor(c);
            largeBytea(c);
            listenNotify(c);
            cancel(c);
            heldWait(c);
        }
        heldDefer();
    }

    static void types(Connection c) throws SQLException {
        String sql = "SELECT ?::int, ?::text, ?::numeric, ?::timestamptz, ?::bytea, ?::uuid,"
            + " ?::int[], ?::text, ?::bool, ?::float8";
        Timestamp ts = Timestamp.from(Instant.parse("2026-12-01T12:30:00Z"));
        UUID u = UUID.fromString("12345678-1234-5678-1234-567812345678");
        try (PreparedStatement ps = c.prepareStatement(sql)) {
            // Past prepareThreshold (5) pgjdbc prepares on the server and
            // asks for binary results: both paths.
            for (int round = 0; round < 7; round++) {
                ps.setInt(1, 42);
                ps.setString(2, "ünïcödé ✓");
                ps.setBigDecimal(3, new BigDecimal("12345.6789"));
                ps.setTimestamp(4, ts);
                ps.setBytes(5, new byte[] {0, 1, (byte) 0xfe, (byte) 0xff});
                ps.setObject(6, u);
                ps.setArray(7, c.createArrayOf("int4", new Integer[] {1, 2, 3}));
                ps.setNull(8, java.sql.Types.VARCHAR);
                ps.setBoolean(9, true);
                ps.setDouble(10, 1.5);
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next(), "no row");
                    eq(42, rs.getInt(1));
                    eq("ünïcödé ✓", rs.getString(2));
                    eq(new BigDecimal("12345.6789"), rs.getBigDecimal(3));
                    eq(ts.toInstant(), rs.getTimestamp(4).toInstant());
                    check(Arrays.equals(new byte[] {0, 1, (byte) 0xfe, (byte) 0xff}, rs.getBytes(5)), "bytea");
                    eq(u, rs.getObject(6));
                    Array a = rs.getArray(7);
                    check(Arrays.equals(new Integer[] {1, 2, 3}, (Object[]) a.getArray()), "int[]");
                    eq(null, rs.getString(8));
                    eq(true, rs.getBoolean(9));
                    eq(1.5, rs.getDouble(10));
                }
            }
        }
        ok("parameters and types round trip, before and after server-side prepare (binary)");
    }

    static void transactions(Connection c) throws SQLException {
        c.setAutoCommit(false);
        try (Statement st = c.createStatement()) {
            st.execute("INSERT INTO items (id, name) VALUES (1, 'kept')");
            c.commit();
            st.execute("INSERT INTO items (id, name) VALUES (2, 'rolled back')");
            c.rollback();
            st.execute("INSERT INTO items (id, name) VALUES (3, 'savepoint outer')");
            Savepoint sp = c.setSavepoint();
            st.execute("INSERT INTO items (id, name) VALUES (4, 'savepoint inner')");
            eq("22012", failsWith(c, "SELECT 1/0"));
            c.rollback(sp);
            c.commit();
        }
        c.setAutoCommit(true);
        List<Integer> ids = new ArrayList<>();
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT id FROM items ORDER BY id")) {
            while (rs.next()) {
                ids.add(rs.getInt(1));
            }
        }
        eq(List.of(1, 3), ids);
        ok("transactions: commit, rollback, a savepoint rolled back inside");
    }

    static void errorsThenWork(Connection c) throws SQLException {
        eq("22012", failsWith(c, "SELECT 1/0"));
        eq(2, one(c, "SELECT 2"));
        try (Statement st = c.createStatement()) {
            st.execute("SET ROLE postgres");
            throw new AssertionError("SET ROLE ran");
        } catch (PSQLException e) {
            eq("42501", e.getSQLState());
            check(e.getMessage().contains("privileged"), e.getMessage());
        }
        eq(3, one(c, "SELECT 3"));
        try (PreparedStatement ps = c.prepareStatement("SELECT set_config('role', ?, false)")) {
            ps.setString(1, "postgres");
            ps.executeQuery();
            throw new AssertionError("set_config ran");
        } catch (PSQLException e) {
            eq("42501", e.getSQLState());
        }
        eq(4, one(c, "SELECT 4"));
        ok("an error, then a working statement (PostgreSQL's and the firewall's errors)");
    }

    static void preparedReuse(Connection c) throws SQLException {
        try (Statement st = c.createStatement()) {
            st.execute("INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(100, 119) g");
        }
        try (PreparedStatement ps = c.prepareStatement("SELECT name FROM items WHERE id = ?")) {
            for (int i = 100; i < 120; i++) {
                ps.setInt(1, i);
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next(), "no row");
                    eq("n" + i, rs.getString(1));
                }
            }
        }
        Object n = one(c, "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'SELECT name FROM items%'");
        eq(1L, n);
        ok("a PreparedStatement reused 20 times (server-prepared after 5)");
    }

    static void copyInAndOut(Connection c) throws Exception {
        CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
        StringBuilder in = new StringBuilder();
        for (int i = 0; i < 500; i++) {
            in.append(1000 + i).append("\tcopied ").append(i).append('\n');
        }
        long n = cm.copyIn("COPY items (id, name) FROM STDIN", new StringReader(in.toString()));
        eq(500L, n);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        cm.copyOut("COPY (SELECT id, name FROM items WHERE id >= 1000 ORDER BY id) TO STDOUT", out);
        eq(in.toString(), out.toString("UTF-8"));
        ok("COPY FROM STDIN and TO STDOUT (CopyManager)");
    }

    static void batch(Connection c) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement("INSERT INTO items (id, name) VALUES (?, ?)")) {
            for (int i = 0; i < 50; i++) {
                ps.setInt(1, 7000 + i);
                ps.setString(2, "batched " + i);
                ps.addBatch();
            }
            int[] counts = ps.executeBatch();
            eq(50, counts.length);
            for (int n : counts) {
                eq(1, n);
            }
        }
        eq(50L, one(c, "SELECT count(*) FROM items WHERE id >= 7000"));
        ok("executeBatch of 50 INSERTs (pipelined by pgjdbc, one Sync)");
    }

    static void cursor(Connection c) throws SQLException {
        // With autocommit off and a fetch size, pgjdbc reads a portal
        // 5000 rows per Execute.
        c.setAutoCommit(false);
        long n = 0;
        long total = 0;
        try (PreparedStatement ps = c.prepareStatement("SELECT g, md5(g::text) FROM generate_series(1, ?) g")) {
            ps.setFetchSize(5000);
            ps.setInt(1, 100000);
            try (ResultSet rs = ps.executeQuery()) {
                while (rs.next()) {
                    n++;
                    total += rs.getInt(1);
                }
            }
        }
        c.commit();
        c.setAutoCommit(true);
        eq(100000L, n);
        eq(100000L * 100001 / 2, total);
        ok("a cursor over 100000 rows, fetch size 5000");
    }

    static void largeBytea(Connection c) throws SQLException {
        byte[] data = new byte[8 * 1024 * 1024];
        new SecureRandom().nextBytes(data);
        try (PreparedStatement ps = c.prepareStatement("SELECT ?::bytea, length(?::bytea)")) {
            ps.setBytes(1, data);
            ps.setBytes(2, data);
            try (ResultSet rs = ps.executeQuery()) {
                check(rs.next(), "no row");
                check(Arrays.equals(data, rs.getBytes(1)), "the bytea came back changed");
                eq(data.length, rs.getInt(2));
            }
        }
        ok("an 8 MB bytea there and back");
    }

    static void listenNotify(Connection c) throws SQLException {
        try (Connection listener = DriverManager.getConnection(URL)) {
            try (Statement st = listener.createStatement()) {
                st.execute("LISTEN infraveil_chan");
            }
            try (Statement st = c.createStatement()) {
                st.execute("NOTIFY infraveil_chan, 'one'");
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT pg_notify('infraveil_chan', ?)")) {
                ps.setString(1, "two");
                ps.execute();
            }
            // getNotifications(timeout) waits on the idle connection.
            List<String> seen = new ArrayList<>();
            long deadline = System.currentTimeMillis() + 10000;
            while (seen.size() < 2 && System.currentTimeMillis() < deadline) {
                PGNotification[] ns = listener.unwrap(PGConnection.class).getNotifications(1000);
                if (ns != null) {
                    for (PGNotification x : ns) {
                        seen.add(x.getName() + ":" + x.getParameter());
                    }
                }
            }
            eq(List.of("infraveil_chan:one", "infraveil_chan:two"), seen);
        }
        ok("LISTEN, NOTIFY and pg_notify, delivered to an idle listener");
    }

    static void cancel(Connection c) throws Exception {
        long started = System.currentTimeMillis();
        try (Statement st = c.createStatement()) {
            Thread t = new Thread(() -> {
                try {
                    Thread.sleep(500);
                    st.cancel();
                } catch (Exception e) {
                    e.printStackTrace();
                }
            });
            t.start();
            try {
                st.execute("SELECT pg_sleep(30)");
                throw new AssertionError("pg_sleep ran to its end");
            } catch (PSQLException e) {
                eq("57014", e.getSQLState());
            }
            t.join();
        }
        eq(6, one(c, "SELECT 6"));
        check(System.currentTimeMillis() - started < 10000, "the query was not cancelled on the server");
        // setQueryTimeout cancels the same way.
        try (Statement st = c.createStatement()) {
            st.setQueryTimeout(1);
            st.execute("SELECT pg_sleep(30)");
            throw new AssertionError("pg_sleep ran to its end");
        } catch (PSQLException e) {
            eq("57014", e.getSQLState());
        }
        eq(7, one(c, "SELECT 7"));
        ok("a running pg_sleep cancelled (Statement.cancel, setQueryTimeout), then a working statement");
    }

    static void heldWait(Connection c) throws SQLException {
        // DELETE without WHERE is destructive: held until approved (wait mode).
        try (Statement st = c.createStatement()) {
            eq(10, st.executeUpdate("DELETE FROM held"));
        }
        ok("a held DELETE waits for its approval, then runs (wait mode)");
    }

    static void heldDefer() throws Exception {
        String id;
        try (Connection agent = DriverManager.getConnection(AGENT_URL);
             PreparedStatement ps = agent.prepareStatement("INSERT INTO held (id, v) VALUES (?, ?)")) {
            ps.setInt(1, 100);
            ps.setString(2, "deferred");
            try {
                ps.executeUpdate();
                throw new AssertionError("a deferred write ran at once");
            } catch (PSQLException e) {
                eq("42501", e.getSQLState());
                Matcher m = Pattern.compile("approval request (a-[0-9a-f]+)").matcher(e.getServerErrorMessage().getMessage());
                check(m.find(), e.getMessage());
                id = m.group(1);
                check(String.valueOf(e.getServerErrorMessage().getHint()).contains(id), e.getServerErrorMessage().getHint());
            }
            boolean done = false;
            for (int i = 0; i < 100 && !done; i++) {
                try {
                    eq(1, ps.executeUpdate());
                    done = true;
                } catch (PSQLException e) {
                    eq("42501", e.getSQLState());
                    Thread.sleep(200); // not approved yet
                }
            }
            check(done, "never approved");
            eq("deferred", one(agent, "SELECT v FROM held WHERE id = 100"));
        }
        ok("a deferred INSERT refused with its approval id (" + id + "), run once approved");
    }
}
