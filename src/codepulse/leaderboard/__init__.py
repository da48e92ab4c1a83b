"""The leaderboard domain: rankings and community benchmarks, precomputed by the scheduler."""
