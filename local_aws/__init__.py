"""The local AWS stack: real HTTP servers on loopback that real AWS clients talk to (DESIGN.md section 5)."""
