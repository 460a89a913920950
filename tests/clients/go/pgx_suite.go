// pgx (v4, Debian's golang-github-jackc-pgx-v4-dev) through the firewall,
// as its users drive it every day.
//
// Run by tests/clients.rs with `go run pgx_suite.go` in GOPATH mode on
// Debian's Go sources (no module download), with DATABASE_URL and AGENT_URL
// as for the Python suites (same tables, identities and held statements).
// Prints one `ok:` line per check; any failure exits 1.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgconn"
	"github.com/jackc/pgx/v4"
)

var ctx = context.Background()

func ok(what string) { fmt.Println("ok: " + what) }

func check(cond bool, format string, args ...interface{}) {
	if !cond {
		panic(fmt.Sprintf(format, args...))
	}
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// The SQLSTATE of err, or "".
func code(err error) string {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code
	}
	return ""
}

func main() {
	conn, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	must(err)
	defer conn.Close(ctx)
	_, isTLS := conn.PgConn().Conn().(*tls.Conn)
	check(isTLS, "not TLS")
	fmt.Println("pgx v4 (Debian), " + runtime.Version() + ", server " + conn.PgConn().ParameterStatus("server_version"))
	ok("connect with the demo's URL, TLS verified")
	types(conn)
	transactions(conn)
	errorsThenWork(conn)
	preparedReuse(conn)
	copyInAndOut(conn)
	batch(conn)
	cursor(conn)
	largeBytea(conn)
	listenNotify(conn)
	cancel(conn)
	heldWait(conn)
	heldDefer()
}

func types(c *pgx.Conn) {
	var (
		i   int32
		t   string
		f   float64
		b   []byte
		bo  bool
		a   []int32
		nul *string
		ts  time.Time
	)
	when := time.Date(2026, 12, 1, 12, 30, 0, 0, time.UTC)
	err := c.QueryRow(ctx,
		"SELECT $1::int4, $2::text, $3::float8, $4::bytea, $5::bool, $6::int4[], $7::text, $8::timestamptz",
		42, "ünïcödé ✓", 1.5, []byte{0, 1, 0xfe, 0xff}, true, []int32{1, 2, 3}, nil, when,
	).Scan(&i, &t, &f, &b, &bo, &a, &nul, &ts)
	must(err)
	check(i == 42 && t == "ünïcödé ✓" && f == 1.5 && bo && nul == nil, "%v %v %v %v %v", i, t, f, bo, nul)
	check(bytes.Equal(b, []byte{0, 1, 0xfe, 0xff}), "bytea %v", b)
	check(reflect.DeepEqual(a, []int32{1, 2, 3}), "int[] %v", a)
	check(ts.Equal(when), "timestamptz %v", ts)
	ok("parameters and types round trip (binary results)")
}

func transactions(c *pgx.Conn) {
	tx, err := c.Begin(ctx)
	must(err)
	_, err = tx.Exec(ctx, "INSERT INTO items (id, name) VALUES (1, 'kept')")
	must(err)
	must(tx.Commit(ctx))
	tx, err = c.Begin(ctx)
	must(err)
	_, err = tx.Exec(ctx, "INSERT INTO items (id, name) VALUES (2, 'rolled back')")
	must(err)
	inner, err := tx.Begin(ctx) // a savepoint
	must(err)
	_, err = inner.Exec(ctx, "SELECT 1/0")
	check(code(err) == "22012", "%v", err)
	must(inner.Rollback(ctx))
	must(tx.Rollback(ctx))
	var ids []int32
	must(c.QueryRow(ctx, "SELECT array_agg(id ORDER BY id) FROM items").Scan(&ids))
	check(reflect.DeepEqual(ids, []int32{1}), "ids %v", ids)
	ok("transactions: commit, rollback, a savepoint rolled back inside")
}

func errorsThenWork(c *pgx.Conn) {
	_, err := c.Exec(ctx, "SELECT 1/0")
	check(code(err) == "22012", "%v", err)
	_, err = c.Exec(ctx, "SET ROLE postgres")
	check(code(err) == "42501" && strings.Contains(err.Error(), "privileged"), "%v", err)
	_, err = c.Exec(ctx, "SELECT set_config('role', $1, false)", "postgres")
	check(code(err) == "42501", "%v", err)
	var n int32
	must(c.QueryRow(ctx, "SELECT $1::int4 + 1", 3).Scan(&n))
	check(n == 4, "%d", n)
	ok("an error, then a working statement (PostgreSQL's and the firewall's errors)")
}

func preparedReuse(c *pgx.Conn) {
	_, err := c.Exec(ctx, "INSERT INTO items (id, name) SELECT g, 'n' || g FROM generate_series(100, 119) g")
	must(err)
	for i := 100; i < 120; i++ {
		var name string
		must(c.QueryRow(ctx, "SELECT name FROM items WHERE id = $1", i).Scan(&name))
		check(name == fmt.Sprintf("n%d", i), "%s", name)
	}
	var n int64
	must(c.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT name FROM items WHERE id = $1'").Scan(&n))
	check(n == 1, "prepared %d", n)
	ok("a statement cached by pgx and reused 20 times")
}

func copyInAndOut(c *pgx.Conn) {
	rows := make([][]interface{}, 500)
	for i := range rows {
		rows[i] = []interface{}{int32(1000 + i), fmt.Sprintf("copied %d", i)}
	}
	n, err := c.CopyFrom(ctx, pgx.Identifier{"items"}, []string{"id", "name"}, pgx.CopyFromRows(rows))
	must(err)
	check(n == 500, "copied %d", n)
	var out bytes.Buffer
	_, err = c.PgConn().CopyTo(ctx, &out, "COPY (SELECT id, name FROM items WHERE id >= 1000 AND id < 1003 ORDER BY id) TO STDOUT")
	must(err)
	check(out.String() == "1000\tcopied 0\n1001\tcopied 1\n1002\tcopied 2\n", "%q", out.String())
	ok("COPY in (CopyFrom, binary) and out (CopyTo, text)")
}

func batch(c *pgx.Conn) {
	b := &pgx.Batch{}
	for i := 0; i < 50; i++ {
		b.Queue("INSERT INTO items (id, name) VALUES ($1, $2)", 7000+i, fmt.Sprintf("batched %d", i))
	}
	b.Queue("SELECT count(*) FROM items WHERE id >= 7000")
	res := c.SendBatch(ctx, b)
	for i := 0; i < 50; i++ {
		_, err := res.Exec()
		must(err)
	}
	var n int64
	must(res.QueryRow().Scan(&n))
	must(res.Close())
	check(n == 50, "batched %d", n)
	ok("a batch of 51 statements in one round trip (pipelined)")
}

func cursor(c *pgx.Conn) {
	tx, err := c.Begin(ctx)
	must(err)
	defer tx.Rollback(ctx)
	_, err = tx.Exec(ctx, "DECLARE big CURSOR FOR SELECT g FROM generate_series(1, 100000) g")
	must(err)
	var n, total int64
	for {
		rows, err := tx.Query(ctx, "FETCH 5000 FROM big")
		must(err)
		got := 0
		for rows.Next() {
			var g int32
			must(rows.Scan(&g))
			n++
			total += int64(g)
			got++
		}
		must(rows.Err())
		if got == 0 {
			break
		}
	}
	must(tx.Commit(ctx))
	check(n == 100000 && total == 100000*100001/2, "%d rows, sum %d", n, total)
	ok("a server-side cursor (DECLARE, FETCH 5000) over 100000 rows")
}

func largeBytea(c *pgx.Conn) {
	data := make([]byte, 8*1024*1024)
	_, err := rand.Read(data)
	must(err)
	var back []byte
	var n int32
	must(c.QueryRow(ctx, "SELECT $1::bytea, length($1::bytea)", data).Scan(&back, &n))
	check(bytes.Equal(back, data) && int(n) == len(data), "bytea came back changed (%d)", n)
	ok("an 8 MB bytea there and back")
}

func listenNotify(c *pgx.Conn) {
	l, err := pgx.Connect(ctx, os.Getenv("DATABASE_URL"))
	must(err)
	defer l.Close(ctx)
	_, err = l.Exec(ctx, "LISTEN infraveil_chan")
	must(err)
	_, err = c.Exec(ctx, "NOTIFY infraveil_chan, 'one'")
	must(err)
	_, err = c.Exec(ctx, "SELECT pg_notify('infraveil_chan', $1)", "two")
	must(err)
	wait, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, want := range []string{"one", "two"} {
		n, err := l.WaitForNotification(wait)
		must(err)
		check(n.Channel == "infraveil_chan" && n.Payload == want, "%+v", n)
	}
	ok("LISTEN, NOTIFY and pg_notify, delivered to an idle listener")
}

func cancel(c *pgx.Conn) {
	started := time.Now()
	go func() {
		time.Sleep(500 * time.Millisecond)
		must(c.PgConn().CancelRequest(ctx))
	}()
	_, err := c.Exec(ctx, "SELECT pg_sleep(30)")
	check(code(err) == "57014", "%v", err)
	var n int32
	must(c.QueryRow(ctx, "SELECT 6").Scan(&n))
	check(time.Since(started) < 10*time.Second, "the query was not cancelled on the server")
	ok("a running pg_sleep cancelled (PgConn.CancelRequest), then a working statement")
}

func heldWait(c *pgx.Conn) {
	tag, err := c.Exec(ctx, "DELETE FROM held")
	must(err)
	check(tag.RowsAffected() == 10, "%s", tag)
	ok("a held DELETE waits for its approval, then runs (wait mode)")
}

func heldDefer() {
	agent, err := pgx.Connect(ctx, os.Getenv("AGENT_URL"))
	must(err)
	defer agent.Close(ctx)
	insert := func() error {
		_, err := agent.Exec(ctx, "INSERT INTO held (id, v) VALUES ($1, $2)", 100, "deferred")
		return err
	}
	err = insert()
	var pg *pgconn.PgError
	check(errors.As(err, &pg) && pg.Code == "42501", "%v", err)
	m := regexp.MustCompile(`approval request (a-[0-9a-f]+)`).FindStringSubmatch(pg.Message)
	check(m != nil && strings.Contains(pg.Hint, m[1]), "%s / %s", pg.Message, pg.Hint)
	done := false
	for i := 0; i < 100 && !done; i++ {
		if err := insert(); err == nil {
			done = true
		} else {
			check(code(err) == "42501", "%v", err)
			time.Sleep(200 * time.Millisecond) // not approved yet
		}
	}
	check(done, "never approved")
	var v string
	must(agent.QueryRow(ctx, "SELECT v FROM held WHERE id = 100").Scan(&v))
	check(v == "deferred", "%s", v)
	ok("a deferred INSERT refused with its approval id (" + m[1] + "), run once approved")
}
