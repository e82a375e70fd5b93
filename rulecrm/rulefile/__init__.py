"""Rule files: YAML with positions, validated into the model the engine runs."""
