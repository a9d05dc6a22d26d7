"""The OPC UA side of the connector: session, value conversion, part events, security."""
