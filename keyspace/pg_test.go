package keyspace_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pgadvisory/pgadvisory/internal/sqltext"
	"github.com/pgadvisory/pgadvisory/internal/testkit"
	"github.com/pgadvisory/pgadvisory/itest"
	"github.com/pgadvisory/pgadvisory/keyspace"
)

func TestMain(m *testing.M) { testkit.Main(m) }

// testNames returns the names whose hashes are checked against the server:
// the golden ones, the empty name, non-ASCII text, 10 KB names, and random
// valid UTF-8 of every length class. None holds NUL, which PostgreSQL text
// cannot store (so no SQL client can hash such a name either).
func testNames(rng *rand.Rand) []string {
	names := []string{
		"", " ", "payment:order-123", "daily-report-job", "a", "A", "order-123",
		"ключ", "日本語のキー", "🔒🔑", "naïve café", "\u00e9", "e\u0301", "\U0010FFFF", "\t\n\r",
		"'; DROP TABLE x; --", `back\slash`, `"quoted"`, "%_*?",
		strings.Repeat("x", 10*1024), strings.Repeat("é", 5*1024), strings.Repeat("語", 3414),
		strings.Repeat("payment:order-123", 603),
	}
	runeRanges := [][2]rune{{0x01, 0x7f}, {0x80, 0x7ff}, {0x800, 0xd7ff}, {0xe000, 0xfffd}, {0x10000, 0x10ffff}}
	for len(names) < 1200 {
		var n int
		switch rng.IntN(10) {
		case 0:
			n = 1000 + rng.IntN(9*1024) // long
		case 1, 2:
			n = rng.IntN(4)
		default:
			n = 1 + rng.IntN(64)
		}
		var b strings.Builder
		if rng.IntN(4) == 0 {
			// Random bytes made valid: whatever byte soup a caller has.
			raw := make([]byte, n)
			for i := range raw {
				raw[i] = byte(1 + rng.IntN(255))
			}
			b.WriteString(strings.ToValidUTF8(string(raw), "\uFFFD"))
		} else {
			for i := 0; i < n; i++ {
				r := runeRanges[rng.IntN(len(runeRanges))]
				b.WriteRune(r[0] + rng.Int32N(r[1]-r[0]+1))
			}
		}
		names = append(names, b.String())
	}
	return names
}

// TestHashMatchesSQL checks Hash and Namespace.Hash against the SQL
// expressions of the package documentation, computed by the live server,
// for every name of testNames, a few round trips for all of them.
func TestHashMatchesSQL(t *testing.T) {
	ns := keyspace.MustNamespace("pg-test-hash", 720001)
	names := testNames(rand.New(rand.NewPCG(1, 2)))
	var long, nonASCII int
	for _, n := range names {
		if !utf8.ValidString(n) || strings.ContainsRune(n, 0) {
			t.Fatalf("test name %q is not storable text", n)
		}
		if len(n) >= 10*1024 {
			long++
		}
		if strings.IndexFunc(n, func(r rune) bool { return r > 0x7f }) >= 0 {
			nonASCII++
		}
	}
	itest.EachDriver(t, func(t *testing.T, driver string) {
		db := itest.Open(t, driver)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var enc string
		if err := db.QueryRowContext(ctx, "SELECT current_setting('server_encoding')").Scan(&enc); err != nil || enc != "UTF8" {
			t.Fatalf("server_encoding %q, %v: md5 of text hashes its bytes in that encoding, want UTF8", enc, err)
		}
		const batch = 400
		trips := 0
		for from := 0; from < len(names); from += batch {
			chunk := names[from:min(from+batch, len(names))]
			arg, err := json.Marshal(chunk)
			if err != nil {
				t.Fatal(err)
			}
			rows, err := db.QueryContext(ctx, `SELECT i - 1,
				('x' || substr(md5(n), 1, 16))::bit(64)::bigint,
				('x' || substr(md5(n), 1, 8))::bit(32)::int
				FROM json_array_elements_text($1::json) WITH ORDINALITY AS u(n, i)`, string(arg))
			if err != nil {
				t.Fatal(err)
			}
			trips++
			seen := 0
			for rows.Next() {
				var (
					i   int
					h64 int64
					h32 int32
				)
				if err := rows.Scan(&i, &h64, &h32); err != nil {
					t.Fatal(err)
				}
				seen++
				name := chunk[i]
				if got, _ := keyspace.Hash(name).Int64(); got != h64 {
					t.Errorf("Hash(%.40q) = %d, SQL says %d", name, got, h64)
				}
				if got := ns.Hash(name); got != keyspace.Pair(720001, h32) {
					t.Errorf("Namespace.Hash(%.40q) = %v, SQL says (720001,%d)", name, got, h32)
				}
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			rows.Close()
			if seen != len(chunk) {
				t.Fatalf("server returned %d rows for %d names", seen, len(chunk))
			}
		}
		t.Logf("%d names (%d of 10 KB or more, %d non-ASCII) agree with SQL in %d round trips", len(names), long, nonASCII, trips)
		testkit.WaitConnsIdle(t, db)
	})
}

// pgLockKeys returns keys of both forms: the extremes and random ones.
func pgLockKeys(rng *rand.Rand) []keyspace.Key {
	keys := []keyspace.Key{}
	for _, n := range []int64{math.MinInt64, math.MinInt64 + 1, math.MaxInt64, math.MaxInt64 - 1, 0, -1, 1,
		math.MaxUint32, 1 << 32, -(1 << 32), math.MinInt32, math.MaxInt32} {
		keys = append(keys, keyspace.Int64(n))
	}
	ext := []int32{math.MinInt32, math.MaxInt32, 0, -1, 1}
	for _, a := range ext {
		for _, b := range ext {
			keys = append(keys, keyspace.Pair(a, b))
		}
	}
	for i := 0; i < 100; i++ {
		keys = append(keys, keyspace.Int64(int64(rng.Uint64())), keyspace.Pair(int32(rng.Uint32()), int32(rng.Uint32())))
	}
	keys = append(keys, keyspace.Hash("payment:order-123"), keyspace.MustNamespace("pg-test-locks", 720002).Hash("order-123"))
	slices.SortFunc(keys, keyspace.Compare)
	return slices.Compact(keys)
}

// TestPgLocksRoundTrip takes every key on the server, reads this backend's
// rows of pg_locks, and decodes each back with FromLock.
func TestPgLocksRoundTrip(t *testing.T) {
	keys := pgLockKeys(rand.New(rand.NewPCG(3, 4)))
	itest.EachDriver(t, func(t *testing.T, driver string) {
		db := itest.Open(t, driver)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		style := sqltext.StyleOf(db.Driver())

		// One at a time with Lock, then all at once with LockAll: both
		// statement shapes must put the same rows in pg_locks.
		for _, k := range keys {
			q, args := sqltext.Lock(style, sqltext.Mode{}, k, 0)
			var ok bool
			var pid int
			if err := conn.QueryRowContext(ctx, q, args...).Scan(&ok, &pid); err != nil || !ok {
				t.Fatalf("lock %v: %v, %v", k, ok, err)
			}
		}
		checkRows(ctx, t, conn, keys)
		unlockAll(ctx, t, conn)

		q, args := sqltext.LockAll(style, sqltext.Mode{}, keys, 0)
		var n int64
		var pid int
		if err := conn.QueryRowContext(ctx, q, args...).Scan(&n, &pid); err != nil || n != int64(len(keys)) {
			t.Fatalf("LockAll: %d of %d, %v", n, len(keys), err)
		}
		checkRows(ctx, t, conn, keys)
		unlockAll(ctx, t, conn)
		conn.Close()
		testkit.WaitNoAdvisoryLocks(t, db)
		testkit.WaitConnsIdle(t, db)
	})
}

// checkRows reads the advisory rows of conn's own backend and checks that
// they decode to exactly keys, with the columns that Key.Lock predicts.
func checkRows(ctx context.Context, t *testing.T, conn *sql.Conn, keys []keyspace.Key) {
	t.Helper()
	rows, err := conn.QueryContext(ctx, `SELECT classid::int8, objid::int8, objsubid::int2
		FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	want := make(map[keyspace.Key]bool, len(keys))
	for _, k := range keys {
		want[k] = true
	}
	got := 0
	for rows.Next() {
		var c, o int64
		var s int16
		if err := rows.Scan(&c, &o, &s); err != nil {
			t.Fatal(err)
		}
		if c < 0 || c > math.MaxUint32 || o < 0 || o > math.MaxUint32 {
			t.Fatalf("pg_locks row (%d, %d, %d) is out of the oid range", c, o, s)
		}
		k, err := keyspace.FromLock(uint32(c), uint32(o), s)
		if err != nil {
			t.Fatalf("FromLock(%d, %d, %d): %v", c, o, s, err)
		}
		if !want[k] {
			t.Errorf("pg_locks row (%d, %d, %d) decodes to %v, which was not locked", c, o, s, k)
			continue
		}
		if wc, wo, ws := k.Lock(); int64(wc) != c || int64(wo) != o || ws != s {
			t.Errorf("%v.Lock() = (%d, %d, %d), pg_locks shows (%d, %d, %d)", k, wc, wo, ws, c, o, s)
		}
		delete(want, k)
		got++
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(want) != 0 {
		t.Errorf("%d locked keys have no pg_locks row, e.g. %v", len(want), anyKey(want))
	}
	if got != len(keys) {
		t.Errorf("decoded %d rows for %d keys", got, len(keys))
	}
}

func anyKey(m map[keyspace.Key]bool) keyspace.Key {
	for k := range m {
		return k
	}
	return keyspace.Key{}
}

func unlockAll(ctx context.Context, t *testing.T, conn *sql.Conn) {
	t.Helper()
	if _, err := conn.ExecContext(ctx, sqltext.UnlockAll); err != nil {
		t.Fatal(err)
	}
}
