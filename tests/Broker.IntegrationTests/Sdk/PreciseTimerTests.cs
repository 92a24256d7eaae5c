using System.Diagnostics;
using Broker.Client;

namespace Broker.IntegrationTests.Sdk;

/// <summary>
/// The SDK's timer for short waits (a producer's linger, a consumer's batch wait): never early, every wait served,
/// a cancellation of a disposed source ignored. How late it is on this machine is measured in perf/ (docs/perf.md, "Timers").
/// </summary>
public sealed class PreciseTimerTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task Short_and_long_delays_complete_and_a_short_one_never_before_its_time()
    {
        var delays = new[] { 30, 1, 20, 10, 45, 3 }.Select(ms => TimeSpan.FromMilliseconds(ms)).Append(PreciseTimer.LongestPrecise * 2).ToArray();
        long start = Stopwatch.GetTimestamp();
        var waits = delays.Select(async delay =>
        {
            await PreciseTimer.Delay(delay);
            return (Delay: delay, Elapsed: Stopwatch.GetElapsedTime(start));
        }).ToList();

        var done = await Task.WhenAll(waits).WaitAsync(Deadline);

        Assert.All(done.Where(d => d.Delay <= PreciseTimer.LongestPrecise), d => Assert.True(d.Elapsed >= d.Delay, $"{d.Delay} ended after {d.Elapsed}"));
        Assert.True(PreciseTimer.Delay(TimeSpan.Zero).IsCompletedSuccessfully);
        Assert.True(PreciseTimer.Delay(TimeSpan.FromMilliseconds(-5)).IsCompletedSuccessfully);
    }

    [Fact]
    public async Task A_cancel_after_for_a_source_disposed_meanwhile_is_ignored_and_later_ones_still_fire()
    {
        var disposed = new CancellationTokenSource();
        PreciseTimer.CancelAfter(disposed, TimeSpan.FromMilliseconds(2));
        disposed.Dispose();
        await PreciseTimer.Delay(TimeSpan.FromMilliseconds(10)).WaitAsync(Deadline);

        using var live = new CancellationTokenSource();
        long start = Stopwatch.GetTimestamp();
        PreciseTimer.CancelAfter(live, TimeSpan.FromMilliseconds(5));
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => Task.Delay(Timeout.Infinite, live.Token).WaitAsync(Deadline));
        Assert.True(Stopwatch.GetElapsedTime(start) >= TimeSpan.FromMilliseconds(5));
    }
}
