//! Bad input on the routes added since the second hardening round (calls, files, tasks,
//! escalations, A2A, events, MCP over HTTP): each hostile request gets its status and JSON error
//! code, and nothing is stored.
