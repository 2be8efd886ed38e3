"""Every table in one schema, the database executor, and the queries: history, taste, feedback, replicas."""
