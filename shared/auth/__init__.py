"""Access control: API keys with roles, checked by every service.

A key is a high-entropy token (`tokens`); only its hash is stored, in the `auth` schema all
services read (`store`). Routes declare who may call them (`http.Allow`); keys are managed
by admins over HTTP (`routes`), by the CLI (`hotline keys`), and handed to a deployment in
a keys file (`keyfile`).
"""
