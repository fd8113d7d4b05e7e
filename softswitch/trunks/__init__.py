"""SIP trunks: carrier configuration, numbering plans, outbound policy, client-side
registration and inbound identification. Every module here is sans-I/O."""
