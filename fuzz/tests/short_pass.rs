//! The short fuzzing pass CI runs (`scripts/fuzz` runs longer ones): every target, a few seconds,
//! no finding.

use std::time::Duration;

#[test]
fn every_target_survives_a_short_pass() {
    for target in crowdpulse_fuzz::targets() {
        let report = crowdpulse_fuzz::run(&target, Duration::from_secs(3), 7);
        assert!(report.executions > 100, "{}: {report:?}", target.name);
        assert!(
            report.findings.is_empty(),
            "{}: {:?}",
            target.name,
            report
                .findings
                .iter()
                .map(|(input, what)| (String::from_utf8_lossy(input).into_owned(), what))
                .collect::<Vec<_>>()
        );
    }
}
