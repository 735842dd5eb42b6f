// Prints the plain closing line CI reads: "N passed, N failed" alone on the last line. Jest
// prints its own summary ("Ran all test suites.") after the reporters run, so the line is
// written when the process exits, synchronously, after everything else.
const { writeSync } = require('node:fs');

class SummaryReporter {
  onRunComplete(_contexts, results) {
    const failed = results.numFailedTests + results.numRuntimeErrorTestSuites;
    const line = `\n${results.numPassedTests} passed, ${failed} failed\n`;
    process.once('exit', () => writeSync(1, line));
  }
}
module.exports = SummaryReporter;
