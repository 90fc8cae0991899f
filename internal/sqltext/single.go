package sqltext

import (
	"strconv"
	"strings"
	"time"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// The statements of one key (Lock, LockExec, Unlock, XactLock, XactLockExec) are on the hot path of
// every lease and every request through the middleware, so their text is
// built once, in the Params style, for each shape: the text of a statement
// depends on the mode, on whether the key is a pair and on whether there is
// a timeout, never on the values, which travel as parameters. The Inline
// style writes the values over the placeholders of the same text. Building a
// statement then costs one allocation for the text (Inline) or the argument
// slice (Params), where composing it piece by piece cost six.
var (
	lockTexts   [2][2][2][2]string // [shared][try][pair][timeout]
	xactTexts   [2][2][2][2]string // [shared][try][pair][timeout]
	unlockTexts [2][2]string       // [shared][pair]

	lockExecTexts [2][2][2][2]string // [shared][try][pair][timeout]
	xactExecTexts [2][2][2][2]string // [shared][try][pair][timeout]
)

func init() {
	keys := [2]keyspace.Key{keyspace.Int64(0), keyspace.Pair(0, 0)}
	timeouts := [2]time.Duration{0, time.Second}
	for sh := range 2 {
		for try := range 2 {
			m := Mode{Shared: sh == 1, Try: try == 1}
			for p, k := range keys {
				for t, d := range timeouts {
					lockTexts[sh][try][p][t], _ = buildLock(Params, m, k, d)
					xactTexts[sh][try][p][t], _ = buildXactLock(Params, m, k, d)
					lockExecTexts[sh][try][p][t], _ = buildLockExec(Params, m, k, d)
					xactExecTexts[sh][try][p][t], _ = buildXactLockExec(Params, m, k, d)
				}
				unlockTexts[sh][p], _ = buildUnlock(Params, m.Shared, k)
			}
		}
	}
}

// single returns text (a Params text from the tables above) with k's values
// and, for timeout > 0, the lock_timeout in milliseconds: as arguments
// (Params), or written over the placeholders (Inline). The arguments are in
// the order of the builders: the key's one or two integers, then the timeout
// as text.
func single(s Style, text string, k keyspace.Key, timeout time.Duration) (string, []any) {
	var vals [3]int64
	n := 1
	if a, b, ok := k.Pair(); ok {
		vals[0], vals[1] = int64(a), int64(b)
		n = 2
	} else {
		vals[0], _ = k.Int64()
	}
	if timeout > 0 {
		vals[n] = max(timeout.Milliseconds(), 1)
		n++
	}
	if s == Inline {
		return inline(text, vals[:n]), nil
	}
	args := make([]any, n)
	for i, v := range vals[:n] {
		args[i] = v
	}
	if timeout > 0 {
		args[n-1] = strconv.FormatInt(vals[n-1], 10) // set_config takes text
	}
	return text, args
}

// inline writes vals over the placeholders $1, $2, ... of text as quoted
// integer literals ('42'), the form the Inline style uses; the casts that
// follow the placeholders stay. Placeholders are the only '$' in the texts
// of this package.
func inline(text string, vals []int64) string {
	var out strings.Builder
	out.Grow(len(text) + len(vals)*22)
	var num [24]byte
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c != '$' {
			out.WriteByte(c)
			continue
		}
		j := i + 1
		p := 0
		for j < len(text) && text[j] >= '0' && text[j] <= '9' && p <= len(vals) {
			p = p*10 + int(text[j]-'0')
			j++
		}
		if p < 1 || p > len(vals) {
			out.WriteByte(c) // not a placeholder of ours: keep it
			continue
		}
		out.WriteByte('\'')
		out.Write(strconv.AppendInt(num[:0], vals[p-1], 10))
		out.WriteByte('\'')
		i = j - 1
	}
	return out.String()
}
