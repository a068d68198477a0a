//! What a training command prints: one line per logged step, per epoch and at the end. Shared
//! by `kiln train` and the executables `kiln build` makes, so their output is alike.

use crate::train::{TrainEvent, TrainReport};

/// Prints a training event on stdout (`step …`, `epoch …`, `early stopping …`).
pub fn print_event(event: &TrainEvent) {
    match event {
        TrainEvent::Step { step, loss } => println!("step {step:>6}  loss {loss:.4}"),
        TrainEvent::Epoch { epoch, train_loss, test_loss, test_accuracy, images_per_sec, seconds } => {
            println!(
                "epoch {epoch}: train loss {train_loss:.4}, test loss {test_loss:.4}{}, {images_per_sec:.0} images/s, {seconds:.1} s",
                accuracy(*test_accuracy)
            );
        }
        TrainEvent::EarlyStop { epoch, best_epoch, best_test_loss } => println!(
            "early stopping after epoch {epoch}: best test loss {best_test_loss:.4} at epoch {best_epoch}"
        ),
    }
}

/// The last line of a run: steps, epochs, final test loss and accuracy.
pub fn done_line(report: &TrainReport) -> String {
    format!(
        "done: {} steps, {} epoch(s){}, final test loss {:.4}{}",
        report.steps,
        report.epochs_run,
        if report.stopped_early { " (stopped early)" } else { "" },
        report.final_test_loss,
        accuracy(report.final_test_accuracy)
    )
}

/// `, test accuracy 97.10%`, or nothing.
pub fn accuracy(a: Option<f32>) -> String {
    a.map(|a| format!(", test accuracy {:.2}%", 100.0 * a)).unwrap_or_default()
}
