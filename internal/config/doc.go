// Package config loads Impetus configuration files, which are written in the
// configuration language of the Momentum messaging platform (ecelerity.conf).
//
// The parser is written by hand because no library parses ecelerity.conf:
// the language has its own mix of scopes, dictionaries in square brackets,
// arrays in parentheses, case-insensitive names and lenient bare values, and
// the manual's own examples rely on that leniency.
//
// Loading happens in three steps. The parser turns the text, with its
// includes spliced in, into a generic tree of [Scope] and [Value] that keeps
// the file, line and column of everything so later errors can point at the
// offending option. A table-driven registry ([ScopeSpec], [OptionSpec]) then
// checks every scope and option: unknown names are errors, real Momentum
// options Impetus does not act on yet are accepted with a [Warning]. Finally
// the core sections (xmpp, xmpp_listener, domain, xmpp_logger, ThreadPool,
// Datasource) are decoded into typed structures. Sections owned by feature
// packages, registered with [RegisterScope], stay raw until their package
// decodes them with [Scope.Decode].
package config
