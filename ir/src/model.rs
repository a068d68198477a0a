//! Model files (JSON): sequential and graph forms, lowered to a forward graph.
