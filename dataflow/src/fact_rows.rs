//! Facts (dead letters, chat messages) as rows: they never change, so each is one insertion at
//! the time it was emitted, final from the start.

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

use crate::rows::Row;

/// A stream of fact rows as a collection.
pub trait FactRows<'scope> {
    /// The rows, each inserted once at the time it was emitted.
    fn fact_rows(self) -> VecCollection<'scope, u64, Row, isize>;
}

impl<'scope> FactRows<'scope> for Stream<'scope, u64, Vec<Row>> {
    fn fact_rows(self) -> VecCollection<'scope, u64, Row, isize> {
        self.unary(Pipeline, "FactRows", |_, _| {
            |input, output| {
                input.for_each(|capability, data| {
                    if let Some(&time) = capability.least() {
                        output
                            .session(&capability)
                            .give_iterator(data.drain(..).map(|fact| (fact, time, 1)));
                    }
                });
            }
        })
        .as_collection()
    }
}
