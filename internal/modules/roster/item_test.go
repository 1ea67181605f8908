package roster_test

import (
	"testing"

	"impetus/internal/modules/roster"
)

// state builds an item in one of the states of RFC 6121 Appendix A.1.
func state(name string) roster.Item {
	it := roster.Item{Subscription: roster.None}
	switch name {
	case "None":
	case "None+PendingOut":
		it.Ask = true
	case "None+PendingIn":
		it.PendingIn = true
	case "None+PendingOut+In":
		it.Ask, it.PendingIn = true, true
	case "To":
		it.Subscription = roster.To
	case "To+PendingIn":
		it.Subscription, it.PendingIn = roster.To, true
	case "From":
		it.Subscription = roster.From
	case "From+PendingOut":
		it.Subscription, it.Ask = roster.From, true
	case "Both":
		it.Subscription = roster.Both
	default:
		panic(name)
	}
	return it
}

func name(it roster.Item) string {
	s := map[string]string{roster.None: "None", roster.To: "To", roster.From: "From", roster.Both: "Both"}[it.Subscription]
	switch {
	case it.Ask && it.PendingIn:
		s += "+PendingOut+In"
	case it.Ask:
		s += "+PendingOut"
	case it.PendingIn:
		s += "+PendingIn"
	}
	return s
}

// TestOutboundAppendixA2 covers the user's server tables of RFC 6121 Appendix A.2.
func TestOutboundAppendixA2(t *testing.T) {
	tests := []struct {
		typ, from, to string
		route         bool
	}{
		// A.2.1 subscribe
		{"subscribe", "None", "None+PendingOut", true},
		{"subscribe", "None+PendingOut", "None+PendingOut", true},
		{"subscribe", "None+PendingIn", "None+PendingOut+In", true},
		{"subscribe", "None+PendingOut+In", "None+PendingOut+In", true},
		{"subscribe", "To", "To", true},
		{"subscribe", "To+PendingIn", "To+PendingIn", true},
		{"subscribe", "From", "From+PendingOut", true},
		{"subscribe", "From+PendingOut", "From+PendingOut", true},
		{"subscribe", "Both", "Both", true},
		// A.2.2 unsubscribe
		{"unsubscribe", "None", "None", true},
		{"unsubscribe", "None+PendingOut", "None", true},
		{"unsubscribe", "None+PendingIn", "None+PendingIn", true},
		{"unsubscribe", "None+PendingOut+In", "None+PendingIn", true},
		{"unsubscribe", "To", "None", true},
		{"unsubscribe", "To+PendingIn", "None+PendingIn", true},
		{"unsubscribe", "From", "From", true},
		{"unsubscribe", "From+PendingOut", "From", true},
		{"unsubscribe", "Both", "From", true},
		// A.2.3 subscribed (without a pending request it is a pre-approval, §3.4)
		{"subscribed", "None", "None", false},
		{"subscribed", "None+PendingOut", "None+PendingOut", false},
		{"subscribed", "None+PendingIn", "From", true},
		{"subscribed", "None+PendingOut+In", "From+PendingOut", true},
		{"subscribed", "To", "To", false},
		{"subscribed", "To+PendingIn", "Both", true},
		{"subscribed", "From", "From", false},
		{"subscribed", "From+PendingOut", "From+PendingOut", false},
		{"subscribed", "Both", "Both", false},
		// A.2.4 unsubscribed
		{"unsubscribed", "None", "None", false},
		{"unsubscribed", "None+PendingOut", "None+PendingOut", false},
		{"unsubscribed", "None+PendingIn", "None", true},
		{"unsubscribed", "None+PendingOut+In", "None+PendingOut", true},
		{"unsubscribed", "To", "To", false},
		{"unsubscribed", "To+PendingIn", "To", true},
		{"unsubscribed", "From", "None", true},
		{"unsubscribed", "From+PendingOut", "None+PendingOut", true},
		{"unsubscribed", "Both", "To", true},
	}
	for _, tc := range tests {
		it := state(tc.from)
		route := it.Outbound(tc.typ)
		if got := name(it); got != tc.to || route != tc.route {
			t.Errorf("outbound %s in %s: %s route=%v, want %s route=%v", tc.typ, tc.from, got, route, tc.to, tc.route)
		}
	}
	// Pre-approval is remembered where there is no subscription from the contact and cancelled
	// by 'unsubscribed'.
	it := state("None")
	it.Outbound("subscribed")
	if !it.Approved {
		t.Error("pre-approval not recorded")
	}
	it.Outbound("unsubscribed")
	if it.Approved {
		t.Error("pre-approval not cancelled")
	}
}

// TestInboundAppendixA3 covers the contact's server tables of RFC 6121 Appendix A.3.
func TestInboundAppendixA3(t *testing.T) {
	const (
		ignore  = roster.Ignore
		deliver = roster.Deliver
		auto    = roster.AutoSubscribed
	)
	tests := []struct {
		typ, from, to string
		action        int
	}{
		// A.3.1 subscribe
		{"subscribe", "None", "None+PendingIn", deliver},
		{"subscribe", "None+PendingOut", "None+PendingOut+In", deliver},
		{"subscribe", "None+PendingIn", "None+PendingIn", ignore},
		{"subscribe", "None+PendingOut+In", "None+PendingOut+In", ignore},
		{"subscribe", "To", "To+PendingIn", deliver},
		{"subscribe", "To+PendingIn", "To+PendingIn", ignore},
		{"subscribe", "From", "From", auto},
		{"subscribe", "From+PendingOut", "From+PendingOut", auto},
		{"subscribe", "Both", "Both", auto},
		// A.3.2 unsubscribe
		{"unsubscribe", "None", "None", ignore},
		{"unsubscribe", "None+PendingOut", "None+PendingOut", ignore},
		{"unsubscribe", "None+PendingIn", "None", deliver},
		{"unsubscribe", "None+PendingOut+In", "None+PendingOut", deliver},
		{"unsubscribe", "To", "To", ignore},
		{"unsubscribe", "To+PendingIn", "To", deliver},
		{"unsubscribe", "From", "None", deliver},
		{"unsubscribe", "From+PendingOut", "None+PendingOut", deliver},
		{"unsubscribe", "Both", "To", deliver},
		// A.3.3 subscribed
		{"subscribed", "None", "None", ignore},
		{"subscribed", "None+PendingOut", "To", deliver},
		{"subscribed", "None+PendingIn", "None+PendingIn", ignore},
		{"subscribed", "None+PendingOut+In", "To+PendingIn", deliver},
		{"subscribed", "To", "To", ignore},
		{"subscribed", "To+PendingIn", "To+PendingIn", ignore},
		{"subscribed", "From", "From", ignore},
		{"subscribed", "From+PendingOut", "Both", deliver},
		{"subscribed", "Both", "Both", ignore},
		// A.3.4 unsubscribed
		{"unsubscribed", "None", "None", ignore},
		{"unsubscribed", "None+PendingOut", "None", deliver},
		{"unsubscribed", "None+PendingIn", "None+PendingIn", ignore},
		{"unsubscribed", "None+PendingOut+In", "None+PendingIn", deliver},
		{"unsubscribed", "To", "None", deliver},
		{"unsubscribed", "To+PendingIn", "None+PendingIn", deliver},
		{"unsubscribed", "From", "From", ignore},
		{"unsubscribed", "From+PendingOut", "From", deliver},
		{"unsubscribed", "Both", "From", deliver},
	}
	for _, tc := range tests {
		it := state(tc.from)
		action := it.Inbound(tc.typ)
		if got := name(it); got != tc.to || action != tc.action {
			t.Errorf("inbound %s in %s: %s action=%d, want %s action=%d", tc.typ, tc.from, got, action, tc.to, tc.action)
		}
	}
	// A pre-approved contact's request is accepted at once (§3.4).
	it := state("To")
	it.Approved = true
	if a := it.Inbound("subscribe"); a != auto || it.Subscription != roster.Both || it.Approved {
		t.Errorf("pre-approved subscribe: action %d, %+v", a, it)
	}
}
