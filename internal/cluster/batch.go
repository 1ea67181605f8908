package cluster

import (
	"bytes"
	"context"
	"sync"

	"mellium.im/xmpp/jid"

	"impetus/internal/router"
	"impetus/internal/stanza"
)

// opBatch carries one presence to several sessions of the receiving node: the recipients, one
// a line as "full JID" or "full JID<TAB>to" when the stanza's 'to' differs from the session's
// full JID ("full JID<TAB>" when it has none), an empty line, and the stanza once, without 'to'. JIDs cannot contain a tab or a
// newline (both are control characters, which PRECIS refuses).
const opBatch = 'B'

// batchKey marks a context whose presence for other nodes is collected in a *batch.
type batchKey struct{}

// batch collects the presence a broadcast sends to sessions on other nodes, by node, so that
// each node gets one transfer per distinct stanza instead of one per session.
type batch struct {
	n     *Node
	mu    sync.Mutex
	nodes []string // in the order they were first addressed
	items map[string][]batchItem
}

type batchItem struct {
	full string
	el   *stanza.Element
}

// Batch implements router.Batcher. A context that already carries a batch keeps it: the
// outer caller sends it, and the inner function sends what was collected so far.
func (n *Node) Batch(ctx context.Context) (context.Context, func()) {
	if b, ok := ctx.Value(batchKey{}).(*batch); ok {
		return ctx, b.flush
	}
	b := &batch{n: n}
	return context.WithValue(ctx, batchKey{}, b), b.flush
}

func (b *batch) add(r *remote, el *stanza.Element) {
	b.mu.Lock()
	if b.items == nil {
		b.items = map[string][]batchItem{}
	}
	if _, ok := b.items[r.rec.Node]; !ok {
		b.nodes = append(b.nodes, r.rec.Node)
	}
	b.items[r.rec.Node] = append(b.items[r.rec.Node], batchItem{r.full.String(), el})
	b.mu.Unlock()
}

// flush publishes what was collected, one or more envelopes per node, and empties the batch.
func (b *batch) flush() {
	b.mu.Lock()
	nodes, items := b.nodes, b.items
	b.nodes, b.items = nil, nil
	b.mu.Unlock()
	for _, node := range nodes {
		b.n.publishBatch(node, items[node])
	}
}

// sameButTo reports whether a and b serialize alike once 'to' is removed: the broadcasts of the
// presence and MUC modules stamp one element per recipient sharing the children, so comparing
// the children's identity and the other attributes avoids serializing every copy.
func sameButTo(a, b *stanza.Element) bool {
	if a == b {
		return true
	}
	if a.Space != b.Space || a.Local != b.Local || len(a.Children) != len(b.Children) {
		return false
	}
	if len(a.Children) > 0 && &a.Children[0] != &b.Children[0] {
		return false
	}
	i, j := 0, 0
	for {
		for i < len(a.Attrs) && a.Attrs[i].Name == "to" {
			i++
		}
		for j < len(b.Attrs) && b.Attrs[j].Name == "to" {
			j++
		}
		if i == len(a.Attrs) || j == len(b.Attrs) {
			return i == len(a.Attrs) && j == len(b.Attrs)
		}
		if a.Attrs[i] != b.Attrs[j] {
			return false
		}
		i, j = i+1, j+1
	}
}

// withoutTo returns el's attributes without 'to', sharing the children.
func withoutTo(el *stanza.Element) *stanza.Element {
	c := &stanza.Element{Space: el.Space, Local: el.Local, Children: el.Children}
	c.Attrs = make([]stanza.Attr, 0, len(el.Attrs))
	for _, a := range el.Attrs {
		if a.Name != "to" {
			c.Attrs = append(c.Attrs, a)
		}
	}
	return c
}

// publishBatch sends items to node: consecutive items with the same stanza share an envelope,
// of at most max_batch_recipients recipients. A single recipient goes as a plain delivery.
func (n *Node) publishBatch(node string, items []batchItem) {
	subject := n.nodeSubject(node)
	for start := 0; start < len(items); {
		end := start + 1
		for end < len(items) && end-start < n.cfg.MaxBatch && sameButTo(items[start].el, items[end].el) {
			end++
		}
		var env []byte
		if end-start == 1 {
			env = envelope(opDeliver, items[start].full, items[start].el)
		} else {
			env = make([]byte, 0, 64*(end-start)+512)
			env = append(env, opBatch)
			for _, it := range items[start:end] {
				env = append(env, it.full...)
				if to := it.el.Attr("to"); to != it.full {
					env = append(env, '\t')
					env = append(env, to...)
				}
				env = append(env, '\n')
			}
			env = append(env, '\n')
			env = withoutTo(items[start].el).AppendXML(env, stanza.NSClient)
		}
		n.Forwarded.Add(1)
		n.BatchedRecipients.Add(int64(end - start))
		if err := n.nc.Publish(subject, env); err != nil {
			n.log.Debug("cluster: forwarding failed", "node", node, "err", err)
		}
		start = end
	}
}

// handleBatch delivers a batch envelope's stanza to each named local session, with 'to' set
// for each; sessions no longer here are skipped, as for any presence.
func (n *Node) handleBatch(data []byte) {
	list, body, ok := bytes.Cut(data, []byte("\n\n"))
	if !ok {
		return
	}
	el, err := parseStanza(body)
	if err != nil {
		n.log.Warn("cluster: undecodable stanza from another node", "err", err)
		return
	}
	n.Received.Add(1) // one transfer, as the sending node counts it
	for line := range bytes.SplitSeq(list, []byte{'\n'}) {
		full, to, found := bytes.Cut(line, []byte{'\t'})
		if !found {
			to = full
		}
		j, err := jid.Parse(string(full))
		if err != nil {
			continue
		}
		s := n.local.Session(j)
		if s == nil {
			continue
		}
		c := &stanza.Element{Space: el.Space, Local: el.Local, Children: el.Children[:len(el.Children):len(el.Children)]}
		c.Attrs = make([]stanza.Attr, len(el.Attrs), len(el.Attrs)+1)
		copy(c.Attrs, el.Attrs)
		if len(to) > 0 {
			c.SetAttr("to", string(to))
		}
		s.Deliver(c)
	}
}

// routeBatched routes el under a batch: presence for sessions on other nodes is collected, and
// anything else first sends what was collected, so that a message never overtakes a presence
// sent before it.
func (n *Node) routeBatched(ctx context.Context, b *batch, el *stanza.Element, to jid.JID) error {
	if el.Local != "presence" {
		b.flush()
		return n.rules.Route(ctx, el, to)
	}
	rules := n.rules
	rules.Deliver = func(s router.Session, el *stanza.Element) bool {
		if r, ok := s.(*remote); ok {
			b.add(r, el)
			return true
		}
		return n.deliver(s, el)
	}
	return rules.Route(ctx, el, to)
}

var _ router.Batcher = (*Node)(nil)
