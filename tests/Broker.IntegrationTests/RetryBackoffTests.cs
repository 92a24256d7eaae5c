using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Grpc.Core;
using Microsoft.Extensions.Time.Testing;

namespace Broker.IntegrationTests;

/// <summary>
/// A group's retry backoff on the real broker, over gRPC with the SDK, on a fake clock the tests move: a nack without a
/// delay and an expired lease wait the schedule's time (not a moment less), a nack's own delay wins, the schedule is
/// capped, and both the policy and a wait in progress survive a restart. Bad schedules are refused with their reason.
/// </summary>
public sealed class RetryBackoffTests : IAsyncLifetime
{
    private static readonly DateTimeOffset Start = new(2026, 6, 1, 8, 0, 0, TimeSpan.Zero);
    private static readonly TimeSpan Tick = TimeSpan.FromMilliseconds(1);
    private readonly FakeTimeProvider _time = new(Start);
    private TestBroker _broker = null!;

    private BrokerClient Client => _broker.Client;

    public async Task InitializeAsync() =>
        _broker = await TestBroker.StartAsync(options => options.MaintenanceIntervalMs = 24 * 3600 * 1000, _time);

    public async Task DisposeAsync() => await _broker.DisposeAsync();

    private static GroupOptions Backoff(int initialSeconds, int maxSeconds) => new()
    {
        VisibilityTimeout = TimeSpan.FromSeconds(10),
        RedeliveryBackoff = new RedeliveryBackoff(TimeSpan.FromSeconds(initialSeconds), TimeSpan.FromSeconds(maxSeconds)),
    };

    [Fact]
    public async Task Nacks_without_a_delay_and_expired_leases_wait_the_schedule_and_a_nacks_own_delay_wins()
    {
        await Client.CreateTopicAsync("jobs");
        await Client.CreateGroupAsync("jobs", "workers", options: Backoff(1, 2));
        await Client.PublishAsync("jobs", [OutgoingMessage.FromText("flaky")]);
        await using var subscription = await Client.SubscribeAsync("jobs", "workers");

        // Attempt 1 fails without a delay: 1 s (1 × 2⁰).
        var first = (await Receive.ExactlyAsync(subscription, 1)).Single();
        Assert.Equal(1, (await subscription.NackAsync([first], TimeSpan.Zero, "boom")).Accepted);
        await AdvanceAndExpectNothingAsync(subscription, TimeSpan.FromSeconds(1) - Tick);
        ReachTheTime();
        var second = (await Receive.ExactlyAsync(subscription, 1)).Single();
        Assert.Equal(2, second.Attempt);

        // Attempt 2's lease runs out (10 s): 2 s (1 × 2¹), not at once.
        await AdvanceAndExpectNothingAsync(subscription, TimeSpan.FromSeconds(10));
        await AdvanceAndExpectNothingAsync(subscription, TimeSpan.FromSeconds(2) - Tick);
        ReachTheTime();
        var third = (await Receive.ExactlyAsync(subscription, 1)).Single();
        Assert.Equal(3, third.Attempt);

        // A nack's own delay (300 ms) wins over the schedule.
        Assert.Equal(1, (await subscription.NackAsync([third], TimeSpan.FromMilliseconds(300))).Accepted);
        await AdvanceAndExpectNothingAsync(subscription, TimeSpan.FromMilliseconds(300) - Tick);
        ReachTheTime();
        var fourth = (await Receive.ExactlyAsync(subscription, 1)).Single();
        Assert.Equal(4, fourth.Attempt);

        // Attempt 4 fails without a delay: capped at 2 s (the schedule says 8).
        Assert.Equal(1, (await subscription.NackAsync([fourth])).Accepted);
        await AdvanceAndExpectNothingAsync(subscription, TimeSpan.FromSeconds(2) - Tick);
        ReachTheTime();
        Assert.Equal(5, (await Receive.ExactlyAsync(subscription, 1)).Single().Attempt);

        var settings = (await Client.DescribeTopicAsync("jobs")).Groups.Single().Settings.RetryBackoff;
        Assert.Equal((1000U, 2000U, 2.0, 0.0), (settings.InitialMs, settings.MaxMs, settings.Multiplier, settings.Jitter));
    }

    [Fact]
    public async Task The_schedule_and_a_wait_in_progress_survive_a_restart()
    {
        await Client.CreateTopicAsync("jobs");
        await Client.CreateGroupAsync("jobs", "workers", options: Backoff(5, 60));
        await Client.PublishAsync("jobs", [OutgoingMessage.FromText("flaky")]);
        await using (var subscription = await Client.SubscribeAsync("jobs", "workers"))
        {
            var first = (await Receive.ExactlyAsync(subscription, 1)).Single();
            Assert.Equal(1, (await subscription.NackAsync([first])).Accepted);
        }

        await _broker.RestartAsync();
        Assert.Equal(5000U, (await Client.DescribeTopicAsync("jobs")).Groups.Single().Settings.RetryBackoff.InitialMs);
        await using var again = await Client.SubscribeAsync("jobs", "workers");
        await AdvanceAndExpectNothingAsync(again, TimeSpan.FromSeconds(5) - Tick);
        ReachTheTime();
        var second = (await Receive.ExactlyAsync(again, 1)).Single();
        Assert.Equal(2, second.Attempt);

        // After the restart the schedule goes on from the delivery count: attempt 2 fails, 10 s.
        Assert.Equal(1, (await again.NackAsync([second])).Accepted);
        await AdvanceAndExpectNothingAsync(again, TimeSpan.FromSeconds(10) - Tick);
        ReachTheTime();
        Assert.Equal(3, (await Receive.ExactlyAsync(again, 1)).Single().Attempt);
    }

    [Theory]
    [InlineData(0, 1000, 2.0, 0.0, "initial delay")]
    [InlineData(2000, 1000, 2.0, 0.0, "maximum delay")]
    [InlineData(1000, 2000, 20.0, 0.0, "multiplier")]
    [InlineData(1000, 2000, 2.0, 2.0, "jitter")]
    public async Task A_bad_schedule_is_refused_with_its_reason_and_creates_no_group(int initialMs, int maxMs, double multiplier, double jitter, string named)
    {
        await Client.CreateTopicAsync("jobs");
        var options = new GroupOptions
        {
            RedeliveryBackoff = new RedeliveryBackoff(TimeSpan.FromMilliseconds(initialMs), TimeSpan.FromMilliseconds(maxMs), multiplier, jitter),
        };
        var error = await Assert.ThrowsAsync<BrokerClientException>(() => Client.CreateGroupAsync("jobs", "workers", options: options));
        Assert.Equal(StatusCode.InvalidArgument, error.Status);
        Assert.Contains(named, error.Message);
        Assert.Empty((await Client.DescribeTopicAsync("jobs")).Groups);
    }

    // The last millisecond of the wait, and one more: the group's timer is armed 1 ms past its due time.
    private void ReachTheTime() => _time.Advance(Tick * 2);

    private async Task AdvanceAndExpectNothingAsync(BrokerSubscription subscription, TimeSpan by)
    {
        _time.Advance(by);
        await Receive.NothingMoreAsync(subscription);
    }
}
