"""Guards: checks applied to a request's text before it leaves, and to the reply.

Each module decides one thing and knows nothing about config or the request path:
`pii` finds and redacts personal data and secrets, `injection` scores prompt-injection
attempts, `validate` enforces input limits, `schema` checks structured output.
"""
