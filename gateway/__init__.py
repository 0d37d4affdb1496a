"""The live half of the product: one Socket.IO server, three namespaces (gateway.md)."""
