package fleet

import (
	"errors"
	"fmt"
)

// Error codes. Only the HTTP layer turns them into status codes.
const (
	EINVALID      = "invalid"
	ENOTFOUND     = "not_found"
	ECONFLICT     = "conflict"
	EFORBIDDEN    = "forbidden"
	EUNAUTHORIZED = "unauthorized"
	// ETOOLARGE: the request is larger than fleetd accepts (a body over
	// its limit).
	ETOOLARGE = "too_large"
	// ENOTALLOWED: the resource exists but does not take that operation
	// (a method it does not serve).
	ENOTALLOWED = "not_allowed"
	// EUNAVAILABLE: fleetd or its store cannot serve now; retrying later
	// may succeed.
	EUNAVAILABLE = "unavailable"
	// EOVERLOADED: the caller must slow down: fleetd has no room for more
	// (a full ingest queue), or the caller used up its allowance (failed
	// authentications).
	EOVERLOADED = "overloaded"
	EINTERNAL   = "internal"
)

// Error is the one error type of fleetd. Message is meant for the API user;
// internal details travel in the wrapped error chain, never in Message.
type Error struct {
	Code    string
	Message string
}

// Error implements the error interface.
func (e *Error) Error() string { return fmt.Sprintf("fleet: %s: %s", e.Code, e.Message) }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL
// for any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		// Before e is declared: a nil error must cost no allocation.
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}

// ErrorMessage returns the user-facing message of err. Errors that are not
// *Error get a generic message so internals never leak to clients.
func ErrorMessage(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
