package pep

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"impetus/internal/stanza"
	"impetus/internal/storage"
)

// Access models of XEP-0060 §4.5 that the service supports. The authorize model needs
// subscription approval, which PEP does without, so it is refused.
const (
	AccessOpen      = "open"
	AccessPresence  = "presence"
	AccessRoster    = "roster"
	AccessWhitelist = "whitelist"
)

// Values of pubsub#send_last_published_item.
const (
	SendLastNever         = "never"
	SendLastOnSub         = "on_sub"
	SendLastOnSubPresence = "on_sub_and_presence"
)

// Config is the configuration of one node (XEP-0060 §8.2), the part PEP needs.
type Config struct {
	Title        string   `json:"title,omitempty"`
	Type         string   `json:"type,omitempty"`
	AccessModel  string   `json:"access_model"`
	RosterGroups []string `json:"roster_groups,omitempty"`
	PersistItems bool     `json:"persist_items"`
	// MaxItems is the number of items kept; the service's limit when the owner asked for "max".
	MaxItems              int    `json:"max_items"`
	SendLast              string `json:"send_last"`
	DeliverNotifications  bool   `json:"deliver_notifications"`
	DeliverPayloads       bool   `json:"deliver_payloads"`
	NotifyRetract         bool   `json:"notify_retract"`
	NotifyDelete          bool   `json:"notify_delete"`
	NotifyConfig          bool   `json:"notify_config"`
	PublishModel          string `json:"publish_model"`
	ItemExpire            string `json:"item_expire,omitempty"`
	PresenceBasedDelivery bool   `json:"presence_based_delivery"`
}

// DefaultConfig is the configuration of a node created without options: the "smart defaults"
// of XEP-0163 §3 (presence access, the last item sent on presence) keeping one item.
func DefaultConfig() Config {
	return Config{
		AccessModel:          AccessPresence,
		PersistItems:         true,
		MaxItems:             1,
		SendLast:             SendLastOnSubPresence,
		DeliverNotifications: true,
		DeliverPayloads:      true,
		NotifyRetract:        true,
		NotifyDelete:         true,
		PublishModel:         "publishers",
	}
}

// storedItem is one published item as kept in storage.
type storedItem struct {
	ID        string `json:"id"`
	Publisher string `json:"publisher,omitempty"`
	// XML is the payload serialized with its namespace declarations.
	XML string `json:"xml"`
	// At is when the item was published, for pubsub#item_expire; items stored before it was
	// recorded have none and do not expire.
	At time.Time `json:"at,omitzero"`
}

// nodeData is the stored form of a node: its configuration and its items, oldest first. One
// storage entry per node keeps a publish (item, trim, order) one Map.Update.
type nodeData struct {
	Config Config       `json:"config"`
	Items  []storedItem `json:"items,omitempty"`
	// Subs are the explicit XEP-0060 subscriptions: the subscribed JIDs, bare or full.
	Subs []string `json:"subscriptions,omitempty"`
}

// loadNode reads and decodes a node inside a storage transaction; a missing node is errNoNode.
func loadNode(tx storage.MapTx, node string) (*nodeData, error) {
	b, err := tx.Get(node)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errNoNode
	} else if err != nil {
		return nil, err
	}
	return decodeNode(b)
}

func decodeNode(b []byte) (*nodeData, error) {
	var n nodeData
	if err := json.Unmarshal(b, &n); err != nil {
		return nil, fmt.Errorf("pep: decoding node: %w", err)
	}
	return &n, nil
}

func (n *nodeData) encode() ([]byte, error) { return json.Marshal(n) }

// size is the stored size of the items, which the per-node byte bound limits.
func (n *nodeData) size() int {
	s := 0
	for _, it := range n.Items {
		s += len(it.XML) + len(it.ID) + len(it.Publisher)
	}
	return s
}

func (n *nodeData) find(id string) int {
	return slices.IndexFunc(n.Items, func(it storedItem) bool { return it.ID == id })
}

// payload parses a stored item's payload back into an element.
func (it *storedItem) payload() (*stanza.Element, error) {
	if it.XML == "" {
		return nil, nil
	}
	return stanza.Parse([]byte(it.XML))
}

// element returns the <item/> for a result or notification in namespace space.
func (it *storedItem) element(space string, withPayload bool) *stanza.Element {
	el := stanza.NewElement(space, "item", stanza.Attr{Name: "id", Value: it.ID})
	if it.Publisher != "" {
		el.SetAttr("publisher", it.Publisher)
	}
	if withPayload {
		if p, err := it.payload(); err == nil && p != nil {
			el.AddChild(p)
		}
	}
	return el
}

// Namespaces of data forms and the pubsub forms.
const (
	NSData           = "jabber:x:data"
	FormNodeConfig   = "http://jabber.org/protocol/pubsub#node_config"
	FormPublishOpts  = "http://jabber.org/protocol/pubsub#publish-options"
	fieldFormType    = "FORM_TYPE"
	fieldMaxItemsMax = "max"
)

// parseForm returns the fields of a submitted data form by var, and its FORM_TYPE.
func parseForm(x *stanza.Element) (formType string, fields map[string][]string) {
	fields = map[string][]string{}
	for f := range x.Elements() {
		if f.Space != NSData || f.Local != "field" {
			continue
		}
		var vals []string
		for v := range f.Elements() {
			if v.Space == NSData && v.Local == "value" {
				vals = append(vals, v.Text())
			}
		}
		name := f.Attr("var")
		if name == fieldFormType {
			if len(vals) > 0 {
				formType = vals[0]
			}
			continue
		}
		fields[name] = vals
	}
	return formType, fields
}

func parseBool(s string) (bool, bool) {
	switch strings.TrimSpace(s) {
	case "1", "true":
		return true, true
	case "0", "false":
		return false, true
	}
	return false, false
}

func single(vals []string) string {
	if len(vals) == 0 {
		return ""
	}
	return vals[0]
}

// errField says which field of a form was refused and why.
type errField struct{ field, why string }

func (e *errField) Error() string { return "pep: field " + e.field + ": " + e.why }

// apply sets the configuration fields of a submitted form on c; maxItems is the service's
// bound, which "max" stands for. An unknown field or a value the service cannot honour is an
// error, so a client never believes a setting took effect when it did not.
func (c *Config) apply(fields map[string][]string, maxItems int) error {
	for name, vals := range fields {
		v := single(vals)
		boolField := func(dst *bool) error {
			b, ok := parseBool(v)
			if !ok {
				return &errField{name, "not a boolean"}
			}
			*dst = b
			return nil
		}
		var err error
		switch name {
		case "pubsub#title":
			c.Title = v
		case "pubsub#type":
			c.Type = v
		case "pubsub#access_model":
			switch v {
			case AccessOpen, AccessPresence, AccessRoster, AccessWhitelist:
				c.AccessModel = v
			default:
				err = &errField{name, "unsupported access model " + strconv.Quote(v)}
			}
		case "pubsub#roster_groups_allowed":
			c.RosterGroups = slices.Clone(vals)
		case "pubsub#persist_items":
			err = boolField(&c.PersistItems)
		case "pubsub#max_items":
			if v == fieldMaxItemsMax {
				c.MaxItems = maxItems
				break
			}
			n, perr := strconv.Atoi(strings.TrimSpace(v))
			switch {
			case perr != nil || n < 0:
				err = &errField{name, "not a count"}
			case n > maxItems:
				err = &errField{name, "above the service's limit of " + strconv.Itoa(maxItems)}
			case n == 0:
				// Zero items is what a transient node keeps; it is not a useful persistent node.
				err = &errField{name, "must be at least 1"}
			default:
				c.MaxItems = n
			}
		case "pubsub#send_last_published_item":
			switch v {
			case SendLastNever, SendLastOnSub, SendLastOnSubPresence:
				c.SendLast = v
			default:
				err = &errField{name, "unsupported value " + strconv.Quote(v)}
			}
		case "pubsub#deliver_notifications":
			err = boolField(&c.DeliverNotifications)
		case "pubsub#deliver_payloads":
			err = boolField(&c.DeliverPayloads)
		case "pubsub#notify_retract":
			err = boolField(&c.NotifyRetract)
		case "pubsub#notify_delete":
			err = boolField(&c.NotifyDelete)
		case "pubsub#notify_config":
			err = boolField(&c.NotifyConfig)
		case "pubsub#presence_based_delivery":
			err = boolField(&c.PresenceBasedDelivery)
		case "pubsub#publish_model":
			if v != "publishers" {
				// Only the owner publishes to a PEP node (XEP-0163 §3).
				err = &errField{name, "only the owner publishes"}
			}
		case "pubsub#item_expire":
			// Seconds after which an item is removed; empty or 0 keeps items.
			if t := strings.TrimSpace(v); t != "" {
				if n, perr := strconv.Atoi(t); perr != nil || n < 0 {
					err = &errField{name, "not a number of seconds"}
					break
				}
			}
			c.ItemExpire = strings.TrimSpace(v)
		default:
			err = &errField{name, "unsupported field"}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// matches reports whether the node's configuration already satisfies each publish option
// (XEP-0060 §7.1.5), with "max" matching the service's limit.
func (c *Config) matches(fields map[string][]string, maxItems int) bool {
	want := *c
	want.RosterGroups = slices.Clone(c.RosterGroups)
	if err := want.apply(fields, maxItems); err != nil {
		return false
	}
	if !slices.Equal(want.RosterGroups, c.RosterGroups) {
		return false
	}
	want.RosterGroups = c.RosterGroups
	return want.equal(c)
}

func (c *Config) equal(o *Config) bool {
	a, b := *c, *o
	a.RosterGroups, b.RosterGroups = nil, nil
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb) && slices.Equal(c.RosterGroups, o.RosterGroups)
}

// form returns the node configuration form (XEP-0060 §8.2) of type typ ("form" or "result").
func (c *Config) form(typ string, maxItems int) *stanza.Element {
	x := stanza.NewElement(NSData, "x", stanza.Attr{Name: "type", Value: typ})
	field := func(name, ftype, label string, vals []string, opts ...string) {
		f := stanza.NewElement(NSData, "field", stanza.Attr{Name: "var", Value: name})
		if ftype != "" {
			f.SetAttr("type", ftype)
		}
		if label != "" && typ == "form" {
			f.SetAttr("label", label)
		}
		if typ == "form" {
			for _, o := range opts {
				f.AddChild(stanza.NewElement(NSData, "option").AddChild(stanza.NewElement(NSData, "value").AddText(o)))
			}
		}
		for _, v := range vals {
			f.AddChild(stanza.NewElement(NSData, "value").AddText(v))
		}
		x.AddChild(f)
	}
	b := func(v bool) []string {
		if v {
			return []string{"1"}
		}
		return []string{"0"}
	}
	field(fieldFormType, "hidden", "", []string{FormNodeConfig})
	field("pubsub#title", "text-single", "A friendly name for the node", []string{c.Title})
	field("pubsub#type", "text-single", "The type of node data, usually the payload namespace", []string{c.Type})
	field("pubsub#access_model", "list-single", "Who may retrieve items", []string{c.AccessModel},
		AccessOpen, AccessPresence, AccessRoster, AccessWhitelist)
	field("pubsub#roster_groups_allowed", "list-multi", "Roster groups allowed to retrieve items", c.RosterGroups)
	field("pubsub#persist_items", "boolean", "Persist items to storage", b(c.PersistItems))
	field("pubsub#max_items", "text-single", "Maximum number of items to persist (at most "+strconv.Itoa(maxItems)+", or max)", []string{strconv.Itoa(c.MaxItems)})
	field("pubsub#send_last_published_item", "list-single", "When to send the last published item", []string{c.SendLast},
		SendLastNever, SendLastOnSub, SendLastOnSubPresence)
	field("pubsub#deliver_notifications", "boolean", "Deliver event notifications", b(c.DeliverNotifications))
	field("pubsub#deliver_payloads", "boolean", "Deliver payloads with event notifications", b(c.DeliverPayloads))
	field("pubsub#notify_retract", "boolean", "Notify subscribers when items are removed", b(c.NotifyRetract))
	field("pubsub#notify_delete", "boolean", "Notify subscribers when the node is deleted", b(c.NotifyDelete))
	field("pubsub#notify_config", "boolean", "Notify subscribers when the configuration changes", b(c.NotifyConfig))
	field("pubsub#presence_based_delivery", "boolean", "Deliver notifications only to available users", b(c.PresenceBasedDelivery))
	field("pubsub#publish_model", "list-single", "Who may publish", []string{c.PublishModel}, "publishers")
	if c.ItemExpire != "" {
		field("pubsub#item_expire", "text-single", "Seconds after which items are removed", []string{c.ItemExpire})
	}
	return x
}

// expiry is how long the node keeps an item (pubsub#item_expire), 0 for ever.
func (c *Config) expiry() time.Duration {
	n, err := strconv.Atoi(c.ItemExpire)
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}
