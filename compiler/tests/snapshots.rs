//! Snapshots of the text IR of every example model: the forward graph (with its loss), the
//! whole training step, and the training step after the rewrite pass (what each fused node
//! covers, then the graph). A diff here is a change in what the compiler produces; review it.

mod common;

use kiln_compiler::rewrite::{rewrite, RewriteOptions};
use kiln_compiler::step::training_step;
use kiln_ir::model::Mode;
use kiln_ir::text;

#[test]
fn forward_and_training_graphs_of_every_example_model() {
    let models = common::example_models();
    assert!(models.len() >= 7, "the zoo has {} models", models.len());
    for (name, model) in models {
        let forward = model.build(2, Mode::Train).unwrap().graph;
        insta::assert_snapshot!(format!("{name}_forward"), text::print(&forward).unwrap());
        let step = training_step(&model, 2).unwrap().graph;
        let printed = text::print(&step).unwrap();
        // Every dump is also a valid input: the text form parses back to the same graph.
        let reparsed = text::parse(&printed).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(text::print(&reparsed).unwrap(), printed, "{name}: round trip");
        insta::assert_snapshot!(format!("{name}_train"), printed);
    }
}

#[test]
fn fused_training_graphs_of_every_example_model() {
    for (name, model) in common::example_models() {
        let step = training_step(&model, 2).unwrap().graph;
        let r = rewrite(&step, &RewriteOptions::default()).unwrap();
        // The report's lines without the timing and e-graph sizes (those vary with the budget).
        let covers: String = r
            .report
            .text()
            .lines()
            .filter(|l| l.starts_with("# %"))
            .map(|l| format!("{l}\n"))
            .collect();
        let printed = text::print(&r.graph).unwrap();
        let reparsed = text::parse(&printed).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(text::print(&reparsed).unwrap(), printed, "{name}: round trip");
        insta::assert_snapshot!(format!("{name}_fused"), format!("{covers}{printed}"));
    }
}
