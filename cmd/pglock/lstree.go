package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/pgadvisory/pgadvisory/internal/lockview"
)

// blockNode is a session in "pglock ls --json"'s tree of who blocks whom.
type blockNode struct {
	PID             int         `json:"pid"`
	ApplicationName string      `json:"application_name"`
	Database        string      `json:"database"`
	Holds           []heldKey   `json:"holds"`
	WaitsFor        *heldKey    `json:"waits_for"` // null for a session that waits for nothing
	WaitedMS        *int64      `json:"waited_ms"` // null when not waiting, or before PostgreSQL 14
	BlockedBy       []int       `json:"blocked_by"`
	Blocks          []blockNode `json:"blocks"` // the sessions waiting behind this one
}

// heldKey is a key a session holds or waits for, and in which mode.
type heldKey struct {
	lsKey
	Mode string `json:"mode"`
}

func toBlockNodes(nodes []lockview.Node) []blockNode {
	out := make([]blockNode, 0, len(nodes))
	for _, n := range nodes {
		b := blockNode{PID: n.PID, ApplicationName: n.ApplicationName, Database: n.Database,
			Holds: []heldKey{}, BlockedBy: n.BlockedBy, Blocks: toBlockNodes(n.Blocks)}
		if b.BlockedBy == nil {
			b.BlockedBy = []int{}
		}
		for _, h := range n.Holds {
			b.Holds = append(b.Holds, heldKey{toKey(h), mode(h)})
		}
		if w := n.Waits; w != nil {
			b.WaitsFor = &heldKey{toKey(*w), mode(*w)}
			b.WaitedMS = ms(w.Waited())
		}
		out = append(out, b)
	}
	return out
}

// printTree writes the trees of who blocks whom, one session a line:
//
//	pid 101 (chain-A) holds 42
//	└─ pid 102 (chain-B) waits 1.2s for 42 (exclusive), holds (1,7)
func printTree(out io.Writer, roots []lockview.Node) {
	for _, n := range roots {
		printNode(out, n, "", "")
	}
}

// printNode writes n after lead, and its children after indent.
func printNode(out io.Writer, n lockview.Node, lead, indent string) {
	var what []string
	if w := n.Waits; w != nil {
		waited := "waits"
		if d, ok := w.Waited(); ok {
			waited += " " + short(d)
		}
		what = append(what, fmt.Sprintf("%s for %s (%s)", waited, w.KeyName(), mode(*w)))
	}
	if len(n.Holds) > 0 {
		var keys []string
		for _, h := range n.Holds {
			keys = append(keys, h.KeyName())
		}
		what = append(what, "holds "+strings.Join(keys, ", "))
	}
	fmt.Fprintf(out, "%spid %d (%s) %s\n", lead, n.PID, dash(n.ApplicationName), strings.Join(what, ", "))
	for i, c := range n.Blocks {
		if i == len(n.Blocks)-1 {
			printNode(out, c, indent+"└─ ", indent+"   ")
		} else {
			printNode(out, c, indent+"├─ ", indent+"│  ")
		}
	}
}
