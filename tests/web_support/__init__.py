"""Support code for the web tests: a folder-backed ArchiveReader and a running test server."""
