"""The data flow: catalogue -> sources -> symbols/prompts -> prompt builder -> seqio tasks
-> packing and mixing. `import symbol_tuning.data.tasks` registers every task."""
