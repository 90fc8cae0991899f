package middleware

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/pgadvisory/pgadvisory/keyspace"
)

// DefaultResponder writes the answers listed in the package documentation: a
// status chosen by the reason err wraps, Retry-After (whole seconds, rounded
// up) on 409, 429 and 503, and a one-line plain-text body that never contains the
// cause.
func DefaultResponder(w http.ResponseWriter, r *http.Request, err error, retryAfter time.Duration) {
	status, msg := http.StatusServiceUnavailable, "could not lock the resource; retry later"
	switch {
	case errors.Is(err, ErrBadKey):
		status, msg = http.StatusBadRequest, "invalid resource id"
	case errors.Is(err, ErrBusy):
		status, msg = http.StatusConflict, "the resource is locked by another request; retry later"
	case errors.Is(err, ErrWaitTimeout):
		msg = "timed out waiting for the resource lock; retry later"
	case errors.Is(err, ErrTooManyWaiters):
		msg = "too many requests waiting for the resource; retry later"
	case errors.Is(err, ErrLimited):
		status, msg = http.StatusTooManyRequests, "too many concurrent requests; retry later"
	case errors.Is(err, ErrCommitFailed):
		status, msg = http.StatusInternalServerError, "could not commit"
	}
	if status == http.StatusConflict || status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", retryAfterValue(retryAfter))
	}
	http.Error(w, msg, status)
}

// retryAfterValue formats d as delta-seconds, rounded up, at least 1.
func retryAfterValue(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}

// reject answers a request that does not reach the handler.
func (c *config) reject(w http.ResponseWriter, r *http.Request, key keyspace.Key, err error) {
	if h := c.hooks.Rejected; h != nil {
		h(r, key, err)
	}
	if c.logger != nil {
		level := slog.LevelDebug
		if (errors.Is(err, ErrUnavailable) || errors.Is(err, ErrCommitFailed)) && r.Context().Err() == nil {
			// A client that went away is no server error.
			level = slog.LevelError
		}
		c.log(r.Context(), level, "middleware: request rejected", r, key, err)
	}
	c.respond(w, r, err, c.retryAfter)
}

// log writes one record if a logger was given and wants the level.
func (c *config) log(ctx context.Context, level slog.Level, msg string, r *http.Request, key keyspace.Key, err error) {
	if c.logger == nil || !c.logger.Enabled(ctx, level) {
		return
	}
	c.logger.LogAttrs(ctx, level, msg,
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.String("key", key.String()), slog.Any("error", err))
}
