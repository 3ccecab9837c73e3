"""Queries executed level by level: every relation of a level fetched in one batch per
source, the levels' stores asked concurrently, and the response projected straight from
the fetched objects, without graphql-core's per-field futures. It reads the schema that
Strawberry builds (field types, relations declared in field metadata) and follows it; it
imports neither the resolvers nor the process.
"""
