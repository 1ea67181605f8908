package router

import "context"

// Batcher is implemented by routers that can carry one broadcast to many sessions of another
// node in a single transfer (a cluster node). Batch returns a context under which presence
// routed with Route is collected instead of sent, and a function that sends what was collected.
// The caller must call it before it routes anything else that must arrive after the broadcast;
// routing a message or iq under the context sends the collected presence first. The function
// may be called more than once: each call sends what was collected since the previous one.
type Batcher interface {
	Batch(ctx context.Context) (context.Context, func())
}

// Batch starts a batch on r when r supports one; otherwise ctx is returned with a function
// that does nothing, so callers need not tell a single node from a cluster.
func Batch(ctx context.Context, r Router) (context.Context, func()) {
	if b, ok := r.(Batcher); ok {
		return b.Batch(ctx)
	}
	return ctx, func() {}
}
