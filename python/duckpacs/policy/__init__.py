"""The storage policy: limits (refuse or recycle), retention rules, protected studies."""
