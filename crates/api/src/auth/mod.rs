//! Authentication (noauth, Keystone v3 tokens) and Octavia's default RBAC policies.
