"""Support shared by the test packages: the S3 server's fixtures and a TLS certificate."""
