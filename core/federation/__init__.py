"""Framework-free federation maths on numpy: weight groups, update validation, per-group
(robust) aggregation, server-side DP and its accounting. Entry point:
`core.federation.server_round.aggregate_round`. Nothing here imports flwr.
"""
