package lockview

import (
	"cmp"
	"slices"
)

// Node is one session in the tree of who blocks whom: the advisory locks it
// holds, the one it waits for, and the sessions waiting behind it.
type Node struct {
	PID             int
	ApplicationName string
	Database        string
	Holds           []Lock // the keys it holds, in Read's order
	Waits           *Lock  // the key it waits for, or nil
	// BlockedBy is every pid pg_blocking_pids names for the wait, also
	// those shown elsewhere in the tree.
	BlockedBy []int
	Blocks    []Node // the sessions that wait behind this one
}

// Blocking arranges locks (as Read returns them) into trees of who blocks
// whom. A root is a session that others wait behind and that waits for no
// advisory lock itself (or waits only behind sessions not in locks). A
// waiter appears under the nearest sessions it waits behind: when it waits
// behind both A and B and B waits behind A, it appears under B only, so a
// queue on one key reads as a chain. Sessions that neither wait nor block
// are left out. A momentary cycle (PostgreSQL breaks deadlocks after
// deadlock_timeout) is cut where it closes.
func Blocking(locks []Lock) []Node {
	g := newGraph(locks)
	var roots []int
	for _, pid := range g.order {
		s := g.sessions[pid]
		switch {
		case s.waits == nil && len(g.children[pid]) > 0:
			roots = append(roots, pid)
		case s.waits != nil && len(g.parents[pid]) == 0:
			roots = append(roots, pid) // waits only behind sessions not listed
		}
	}
	reached := map[int]bool{}
	var out []Node
	for _, pid := range roots {
		out = append(out, g.node(pid, map[int]bool{}, reached))
	}
	// Whatever is left waits in a cycle with no way in: start at its
	// longest waiter.
	for _, pid := range g.order {
		if g.sessions[pid].waits != nil && !reached[pid] {
			out = append(out, g.node(pid, map[int]bool{}, reached))
		}
	}
	return out
}

// session is what the graph knows of one pid.
type session struct {
	first Lock // any row of the session, for its name and database
	holds []Lock
	waits *Lock
}

// graph is the wait-for relation between the sessions of a set of locks.
type graph struct {
	sessions map[int]*session
	order    []int         // pids: longest waiter first, then by pid
	parents  map[int][]int // waiter -> the nearest sessions it waits behind
	children map[int][]int // the reverse, in order
}

func newGraph(locks []Lock) *graph {
	g := &graph{sessions: map[int]*session{}, parents: map[int][]int{}, children: map[int][]int{}}
	for _, l := range locks {
		s := g.sessions[l.PID]
		if s == nil {
			s = &session{first: l}
			g.sessions[l.PID] = s
			g.order = append(g.order, l.PID)
		}
		if l.Granted {
			s.holds = append(s.holds, l)
		} else {
			w := l
			s.waits = &w
		}
	}
	slices.SortFunc(g.order, func(a, b int) int {
		wa, _ := g.waited(a)
		wb, _ := g.waited(b)
		if c := cmp.Compare(wb, wa); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	for _, pid := range g.order {
		w := g.sessions[pid].waits
		if w == nil {
			continue
		}
		var known []int
		for _, b := range w.BlockedBy {
			if _, ok := g.sessions[b]; ok && b != pid && !slices.Contains(known, b) {
				known = append(known, b)
			}
		}
		// Keep the nearest: drop a blocker that another blocker itself
		// waits behind.
		for _, b := range known {
			if !slices.ContainsFunc(known, func(o int) bool { return o != b && g.behind(o, b) }) {
				g.parents[pid] = append(g.parents[pid], b)
			}
		}
		if len(g.parents[pid]) == 0 {
			g.parents[pid] = known // the blockers wait behind each other: a cycle
		}
	}
	for _, pid := range g.order {
		for _, p := range g.parents[pid] {
			g.children[p] = append(g.children[p], pid)
		}
	}
	return g
}

func (g *graph) waited(pid int) (int64, bool) {
	w := g.sessions[pid].waits
	if w == nil {
		return -1, false
	}
	d, ok := w.Waited()
	return int64(d), ok
}

// behind reports whether pid waits, directly or through others, behind
// blocker, following every pid pg_blocking_pids named.
func (g *graph) behind(pid, blocker int) bool {
	seen := map[int]bool{pid: true}
	stack := []int{pid}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		s := g.sessions[p]
		if s == nil || s.waits == nil {
			continue
		}
		for _, b := range s.waits.BlockedBy {
			if b == blocker {
				return true
			}
			if !seen[b] {
				seen[b] = true
				stack = append(stack, b)
			}
		}
	}
	return false
}

// node builds the tree below pid; path holds the pids above it, so that a
// cycle ends where it closes.
func (g *graph) node(pid int, path, reached map[int]bool) Node {
	s := g.sessions[pid]
	reached[pid] = true
	n := Node{PID: pid, ApplicationName: s.first.ApplicationName, Database: s.first.Database, Holds: s.holds, Waits: s.waits}
	if s.waits != nil {
		n.BlockedBy = s.waits.BlockedBy
	}
	path[pid] = true
	for _, c := range g.children[pid] {
		if !path[c] {
			n.Blocks = append(n.Blocks, g.node(c, path, reached))
		}
	}
	delete(path, pid)
	return n
}
