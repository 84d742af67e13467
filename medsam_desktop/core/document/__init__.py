"""The editing document: the label map with its label table and edits, undo/redo, crash-safe autosave. No Qt."""
