"""adaptmesh evaluation gate: judges candidates against the champion and promotes winners.

Entry points: `adaptmesh_gate.app.build_app(GateSettings())`, and `adaptmesh_gate.policy.decide`
for the gate policy on its own. Nothing is imported here, so the pure modules load without
the model stack.
"""
