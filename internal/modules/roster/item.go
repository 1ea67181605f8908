package roster

import (
	"encoding/json"
	"fmt"
	"slices"

	"impetus/internal/stanza"
)

// Subscription states of a roster item (RFC 6121 §2.1.2.5).
const (
	None = "none"
	To   = "to"
	From = "from"
	Both = "both"
)

// Item is one contact of a user: a roster item, or only the record of an inbound subscription
// request or a pre-approval that the user has not acted on yet (Hidden).
type Item struct {
	// JID is the contact's normalized JID, the key of the entry; it is not part of the encoding.
	JID string
	// Name is the user's handle for the contact; empty means none.
	Name string
	// Groups are the roster groups, in the order the client gave them.
	Groups []string
	// Subscription is one of None, To, From and Both.
	Subscription string
	// Ask marks an outbound subscription request still pending (ask='subscribe').
	Ask bool
	// Approved marks a subscription pre-approval (RFC 6121 §3.4).
	Approved bool
	// PendingIn marks an inbound subscription request awaiting the user's answer.
	PendingIn bool
	// Hidden marks an entry that exists only to remember PendingIn: an inbound request does not
	// put the contact on the roster (RFC 6121 §3.1.3), so such an entry is never listed or pushed.
	Hidden bool
}

// record is the stored form of an Item. Short keys keep the rows small; the field set only grows,
// and unknown fields are ignored on decoding, so older and newer servers read each other's rows.
type record struct {
	Name     string   `json:"name,omitempty"`
	Groups   []string `json:"groups,omitempty"`
	Sub      string   `json:"sub,omitempty"`
	Ask      bool     `json:"ask,omitempty"`
	Approved bool     `json:"approved,omitempty"`
	In       bool     `json:"in,omitempty"`
	Hidden   bool     `json:"hidden,omitempty"`
}

// Encode returns the stored form of it (without its JID, which is the key).
func Encode(it Item) ([]byte, error) {
	sub := it.Subscription
	if sub == None {
		sub = ""
	}
	switch sub {
	case "", To, From, Both:
	default:
		return nil, fmt.Errorf("roster: invalid subscription %q", it.Subscription)
	}
	return json.Marshal(record{Name: it.Name, Groups: it.Groups, Sub: sub, Ask: it.Ask, Approved: it.Approved,
		In: it.PendingIn, Hidden: it.Hidden})
}

// Decode parses the stored form of the item for contact.
func Decode(contact string, data []byte) (Item, error) {
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return Item{}, fmt.Errorf("roster: item %s: %w", contact, err)
	}
	it := Item{JID: contact, Name: r.Name, Groups: r.Groups, Subscription: r.Sub, Ask: r.Ask,
		Approved: r.Approved, PendingIn: r.In, Hidden: r.Hidden}
	switch it.Subscription {
	case "":
		it.Subscription = None
	case To, From, Both:
	default:
		return Item{}, fmt.Errorf("roster: item %s: invalid subscription %q", contact, r.Sub)
	}
	return it, nil
}

// HasTo reports whether the user receives the contact's presence.
func (it *Item) HasTo() bool { return it.Subscription == To || it.Subscription == Both }

// HasFrom reports whether the contact receives the user's presence.
func (it *Item) HasFrom() bool { return it.Subscription == From || it.Subscription == Both }

// Listed reports whether the entry is a roster item the user sees.
func (it *Item) Listed() bool { return !it.Hidden }

// empty reports whether the entry carries nothing worth keeping.
func (it *Item) empty() bool { return it.Hidden && !it.PendingIn && !it.Approved }

// visible is what a client sees of the item; a change in it needs a roster push.
func (it *Item) visible(other *Item) bool {
	return it.Name == other.Name && it.Subscription == other.Subscription && it.Ask == other.Ask &&
		it.Approved == other.Approved && slices.Equal(it.Groups, other.Groups)
}

func (it *Item) setSub(to, from bool) {
	switch {
	case to && from:
		it.Subscription = Both
	case to:
		it.Subscription = To
	case from:
		it.Subscription = From
	default:
		it.Subscription = None
	}
}

// Outbound applies a subscription stanza of type typ that the user sends to the contact to the
// user's item, following the user's-server tables of RFC 6121 Appendix A.2 (and §3.4 for
// pre-approval). It reports whether the stanza is to be routed to the contact. The caller creates
// a hidden entry for a contact that has none.
func (it *Item) Outbound(typ string) (route bool) {
	to, from := it.HasTo(), it.HasFrom()
	switch typ {
	case "subscribe":
		// §3.1.2: the request puts the contact on the roster; it is routed even when the user is
		// subscribed already so the contact's server can answer and resynchronize the state.
		it.Hidden = false
		if !to {
			it.Ask = true
		}
		return true
	case "unsubscribe":
		it.Ask = false
		it.setSub(false, from)
		return true
	case "subscribed":
		if it.PendingIn {
			it.PendingIn = false
			it.Approved = false
			it.Hidden = false
			it.setSub(to, true)
			return true
		}
		if from {
			return false
		}
		// §3.4: without a pending request, 'subscribed' is a pre-approval the server remembers
		// and does not route.
		it.Approved = true
		it.Hidden = false
		return false
	case "unsubscribed":
		if it.PendingIn || from {
			it.PendingIn = false
			it.Approved = false
			it.setSub(to, false)
			return true
		}
		// Cancelling a pre-approval is the user's business only.
		it.Approved = false
		return false
	}
	return false
}

// Inbound actions decided by Item.Inbound.
const (
	// Ignore drops the stanza.
	Ignore = iota
	// Deliver delivers the stanza to the user's available resources.
	Deliver
	// AutoSubscribed answers a subscription request with 'subscribed' on the user's behalf and
	// does not bother the user.
	AutoSubscribed
)

// Inbound applies a subscription stanza of type typ from the contact to the user's item,
// following the contact's-server tables of RFC 6121 Appendix A.3. It returns what to do with
// the stanza.
func (it *Item) Inbound(typ string) int {
	to, from := it.HasTo(), it.HasFrom()
	switch typ {
	case "subscribe":
		if from {
			return AutoSubscribed
		}
		if it.Approved {
			it.Approved = false
			it.PendingIn = false
			it.setSub(to, true)
			return AutoSubscribed
		}
		if it.PendingIn {
			// A repeated request is not delivered again (it waits for the user already).
			return Ignore
		}
		it.PendingIn = true
		return Deliver
	case "subscribed":
		if !it.Ask {
			// §3.1.6: 'subscribed' without a pending request is ignored.
			return Ignore
		}
		it.Ask = false
		it.setSub(true, from)
		return Deliver
	case "unsubscribe":
		if !from && !it.PendingIn {
			return Ignore
		}
		it.PendingIn = false
		it.setSub(to, false)
		return Deliver
	case "unsubscribed":
		if !to && !it.Ask {
			return Ignore
		}
		it.Ask = false
		it.setSub(false, from)
		return Deliver
	}
	return Ignore
}

// Element returns the <item/> of the roster protocol for it.
func (it *Item) Element() *stanza.Element {
	el := stanza.NewElement(NS, "item", stanza.Attr{Name: "jid", Value: it.JID})
	if it.Name != "" {
		el.SetAttr("name", it.Name)
	}
	el.SetAttr("subscription", it.Subscription)
	if it.Ask {
		el.SetAttr("ask", "subscribe")
	}
	if it.Approved {
		el.SetAttr("approved", "true")
	}
	for _, g := range it.Groups {
		el.AddChild(stanza.NewElement(NS, "group").AddText(g))
	}
	return el
}
