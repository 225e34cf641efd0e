"""The typed SSA graph IR: types, ops and their schemas, graphs, builder, text form, verifier."""
