package advisory

import (
	"context"
	"net"
	"reflect"
	"time"
)

// netConnOf returns the socket under a driver connection of pgx's stdlib
// (*stdlib.Conn), or nil for any other. It follows pgx's exported accessors
// Conn() *pgx.Conn, PgConn() *pgconn.PgConn and Conn() net.Conn by
// reflection, so that advisory does not import pgx. It runs once per
// connection, when the session is learnt.
//
// The socket is used for one thing: a release that has not ended within
// releaseTimeout has the socket's deadline set to now, which makes pgx fail
// the statement and close the connection (what pgx itself does when a
// statement's context ends). That bounds every release without giving pgx a
// context that can end, which pgx would watch on every statement.
func netConnOf(dc any) net.Conn {
	v := reflect.ValueOf(dc)
	if v = call(v.MethodByName("Conn")); !v.IsValid() {
		return nil
	}
	if v = call(v.MethodByName("PgConn")); !v.IsValid() {
		return nil
	}
	if v = call(v.MethodByName("Conn")); !v.IsValid() {
		return nil
	}
	nc, _ := v.Interface().(net.Conn)
	return nc
}

// call calls m, a method without arguments and with one result, and returns
// the result; the zero Value if m is not such a method or the result is nil.
func call(m reflect.Value) reflect.Value {
	if !m.IsValid() || m.Type().NumIn() != 0 || m.Type().NumOut() != 1 {
		return reflect.Value{}
	}
	v := m.Call(nil)[0]
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return reflect.Value{}
		}
	}
	return v
}

// endSession closes the server session under a driver connection of pgx's
// stdlib through its *pgx.Conn (Conn().Close(ctx)), for a discard, and does
// nothing for any other connection. database/sql's Close of such a
// connection gives it back to the pgxpool when the *sql.DB comes from
// stdlib.OpenDBFromPool, which would keep the session, and every lock it
// holds, alive for the pool's next user; a closed *pgx.Conn is destroyed by
// the pgxpool instead. (For a plain pgx connection database/sql's Close then
// finds it closed already.)
func endSession(dc any) {
	v := call(reflect.ValueOf(dc).MethodByName("Conn"))
	if !v.IsValid() {
		return
	}
	m := v.MethodByName("Close")
	ctxType := reflect.TypeFor[context.Context]()
	if !m.IsValid() || m.Type().NumIn() != 1 || !ctxType.AssignableTo(m.Type().In(0)) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	m.Call([]reflect.Value{reflect.ValueOf(ctx)})
}
