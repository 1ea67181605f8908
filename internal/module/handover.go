package module

import "context"

type handoverKey struct{}

// WithHandover marks ctx for the session hooks run while a session moves to another node of
// a cluster (XEP-0198 resumption there): its closing on the old node and its presence
// recorded again on the new one are not changes the user's contacts should see.
func WithHandover(ctx context.Context) context.Context {
	return context.WithValue(ctx, handoverKey{}, true)
}

// IsHandover reports whether ctx is marked by WithHandover.
func IsHandover(ctx context.Context) bool {
	v, _ := ctx.Value(handoverKey{}).(bool)
	return v
}
