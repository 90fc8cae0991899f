package sqltext

import (
	"strconv"
	"time"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// The statements of one key (Lock, LockExec, Unlock, XactLock, XactLockExec)
// are on the hot path of every lease and every request through the
// middleware, so their text is
// built once, in the Params style, for each shape: the text of a statement
// depends on the mode, on whether the key is a pair and on whether there is
// a timeout, never on the values, which travel as parameters. The Inline
// style writes the values over the placeholders of the same text. Building a
// statement then costs one allocation for the text (Inline) or the argument
// slice (Params), where composing it piece by piece cost six.
var (
	lockTexts   [2][2][2][2]*template // [shared][try][pair][timeout]
	xactTexts   [2][2][2][2]*template // [shared][try][pair][timeout]
	unlockTexts [2][2]*template       // [shared][pair]

	lockExecTexts [2][2][2][2]*template // [shared][try][pair][timeout]
	xactExecTexts [2][2][2][2]*template // [shared][try][pair][timeout]
)

// template is one statement text in the Params style, and the same text cut
// at its placeholders, so that the Inline style can be written in one pass
// without scanning the text.
type template struct {
	text string
	segs []string // the text between placeholders: len(args) + 1 pieces
	args []int    // the argument each placeholder stands for, 0-based, in text order
}

// newTemplate cuts text at its placeholders ($1, $2, ...; each stands for
// one argument of args, in any order).
func newTemplate(text string, args []any) *template {
	t := &template{text: text}
	start := 0
	for i := 0; i < len(text); i++ {
		if text[i] != '$' {
			continue
		}
		j, n := i+1, 0
		for j < len(text) && text[j] >= '0' && text[j] <= '9' {
			n = n*10 + int(text[j]-'0')
			j++
		}
		if n < 1 || n > len(args) {
			panic("sqltext: a '$' that is not a placeholder in " + text)
		}
		t.segs = append(t.segs, text[start:i])
		t.args = append(t.args, n-1)
		start, i = j, j-1
	}
	t.segs = append(t.segs, text[start:])
	return t
}

// inline writes vals over the placeholders as quoted integer literals
// ('42'), with one allocation for the result.
func (t *template) inline(vals []int64) string {
	var buf [512]byte
	b := append(buf[:0], t.segs[0]...)
	for i, a := range t.args {
		b = append(b, '\'')
		b = strconv.AppendInt(b, vals[a], 10)
		b = append(b, '\'')
		b = append(b, t.segs[i+1]...)
	}
	return string(b)
}

func init() {
	keys := [2]keyspace.Key{keyspace.Int64(0), keyspace.Pair(0, 0)}
	timeouts := [2]time.Duration{0, time.Second}
	for sh := range 2 {
		for try := range 2 {
			m := Mode{Shared: sh == 1, Try: try == 1}
			for p, k := range keys {
				for t, d := range timeouts {
					lockTexts[sh][try][p][t] = newTemplate(buildLock(Params, m, k, d))
					xactTexts[sh][try][p][t] = newTemplate(buildXactLock(Params, m, k, d))
					lockExecTexts[sh][try][p][t] = newTemplate(buildLockExec(Params, m, k, d))
					xactExecTexts[sh][try][p][t] = newTemplate(buildXactLockExec(Params, m, k, d))
				}
				unlockTexts[sh][p] = newTemplate(buildUnlock(Params, m.Shared, k))
			}
		}
	}
}

// single returns t's text (a Params text from the tables above) with k's values
// and, for timeout > 0, the lock_timeout in milliseconds: as arguments
// (Params), or written over the placeholders (Inline). The arguments are in
// the order of the builders: the key's one or two integers, then the timeout
// as text.
func single(s Style, t *template, k keyspace.Key, timeout time.Duration) (string, []any) {
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
		return t.inline(vals[:n]), nil
	}
	args := make([]any, n)
	for i, v := range vals[:n] {
		args[i] = v
	}
	if timeout > 0 {
		args[n-1] = strconv.FormatInt(vals[n-1], 10) // set_config takes text
	}
	return t.text, args
}
