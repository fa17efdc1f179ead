"""What evolves and how, pure (no I/O): genomes and splicing, prompts and operators, offline operators, selection, the generation plan."""
