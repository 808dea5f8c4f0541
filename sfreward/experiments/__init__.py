"""Small experiments the platform runs on itself (`sfr experiment ...`)."""
