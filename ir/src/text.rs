//! The text form of graphs (one node per line) with its parser, and Graphviz DOT output.
