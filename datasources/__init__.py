"""Everything that talks to a store, and nothing that knows GraphQL."""
