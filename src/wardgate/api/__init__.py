"""HTTP API: the reviewers' approvals endpoints (`create_app`, `serve_api`)."""
