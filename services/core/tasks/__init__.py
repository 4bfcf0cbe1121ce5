"""What a backend is: one protocol per task, the jobs a batch carries, and the registry that finds backends."""
