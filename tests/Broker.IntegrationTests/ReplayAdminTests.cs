using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Grpc.Core;
using Microsoft.Extensions.Time.Testing;

namespace Broker.IntegrationTests;

/// <summary>
/// Replay and group administration over gRPC on the real broker, and retention: reset by offset and by time while a
/// consumer is subscribed (its stream ends with UNAVAILABLE 1203, and a new subscription reads from the new position),
/// delete (refused while consumers are subscribed unless forced), purge, and retention by age and size that never
/// passes a live group's unacknowledged messages. The broker runs on a fake clock the tests move; maintenance runs when
/// the test calls it.
/// </summary>
public sealed class ReplayAdminTests : IAsyncLifetime
{
    private static readonly DateTimeOffset Start = new(2026, 3, 1, 12, 0, 0, TimeSpan.Zero);
    private readonly FakeTimeProvider _time = new(Start);
    private TestBroker _broker = null!;

    private BrokerClient Client => _broker.Client;

    public async Task InitializeAsync() =>
        _broker = await TestBroker.StartAsync(options => options.MaintenanceIntervalMs = 24 * 3600 * 1000, _time);

    public async Task DisposeAsync() => await _broker.DisposeAsync();

    [Fact]
    public async Task Reset_by_offset_ends_the_groups_streams_and_they_read_again_from_there()
    {
        await Client.CreateTopicAsync("jobs");
        await PublishAsync("jobs", 10);
        await using (var subscription = await Client.SubscribeAsync("jobs", "g"))
        {
            await subscription.AckAsync([.. await Receive.ExactlyAsync(subscription, 10)], default);

            Assert.Equal(4, await Client.ResetGroupAsync("jobs", "g", StartAt.AtOffset(4)));

            var ended = await Assert.ThrowsAsync<BrokerClientException>(async () => await subscription.ReceiveAsync(new CancellationTokenSource(Receive.Deadline).Token));
            Assert.Equal((StatusCode.Unavailable, 1203), (ended.Status, ended.ErrorCode));
        }
        var group = (await Client.DescribeTopicAsync("jobs")).Groups.Single();
        Assert.Equal((4UL, 6UL), (group.AckFloor, group.Backlog));
        await using var again = await Client.SubscribeAsync("jobs", "g");
        var replayed = await Receive.ExactlyAsync(again, 6);
        Assert.Equal([4L, 5, 6, 7, 8, 9], replayed.Select(m => m.Offset));
        Assert.All(replayed, m => Assert.Equal(1, m.Attempt));
        await Receive.NothingMoreAsync(again);
    }

    [Fact]
    public async Task Update_with_the_rules_the_group_has_leaves_its_subscriptions_and_leases_alone()
    {
        await Client.CreateTopicAsync("jobs");
        await PublishAsync("jobs", 2);
        var options = new GroupOptions { MaxDeliveries = 3, VisibilityTimeout = TimeSpan.FromMinutes(1) };
        await Client.CreateGroupAsync("jobs", "g", options: options);
        await using var subscription = await Client.SubscribeAsync("jobs", "g");
        var held = await Receive.ExactlyAsync(subscription, 2);

        // A deploy script applying today's rules again: no reset, so the stream goes on and its leases still settle.
        var settings = await Client.UpdateGroupAsync("jobs", "g", options);
        Assert.Equal(3U, settings.MaxDeliveries);
        Assert.Equal(2, (await subscription.AckAsync(held, default)).Accepted);
        await PublishAsync("jobs", 1);
        Assert.Equal(2L, (await Receive.ExactlyAsync(subscription, 1)).Single().Offset);
    }

    [Fact]
    public async Task Update_replaces_a_groups_rules_and_keeps_its_acks_and_delivery_counts_across_a_restart()
    {
        await Client.CreateTopicAsync("jobs");
        await PublishAsync("jobs", 5);
        await Client.CreateGroupAsync("jobs", "g");
        await using (var subscription = await Client.SubscribeAsync("jobs", "g"))
        {
            var held = await Receive.ExactlyAsync(subscription, 5);
            Assert.Equal(1, (await subscription.AckAsync([held[0]], default)).Accepted);

            var settings = await Client.UpdateGroupAsync("jobs", "g", new GroupOptions { MaxDeliveries = 3, OrderedByKey = true });
            Assert.Equal((3U, true), (settings.MaxDeliveries, settings.OrderedByKey));

            var ended = await Assert.ThrowsAsync<BrokerClientException>(async () => await subscription.ReceiveAsync(new CancellationTokenSource(Receive.Deadline).Token));
            Assert.Equal((StatusCode.Unavailable, 1203), (ended.Status, ended.ErrorCode));
        }
        await _broker.RestartAsync();
        var group = (await Client.DescribeTopicAsync("jobs")).Groups.Single();
        Assert.Equal((1UL, 3U, true), (group.AckFloor, group.Settings.MaxDeliveries, group.Settings.OrderedByKey));
        await using var again = await Client.SubscribeAsync("jobs", "g");
        var redelivered = await Receive.ExactlyAsync(again, 4);
        Assert.Equal([1L, 2, 3, 4], redelivered.Select(m => m.Offset).Order());
        // What was in flight at the update was delivered once already: its count goes on.
        Assert.All(redelivered, m => Assert.Equal(2, m.Attempt));
        await AssertFailsAsync(StatusCode.NotFound, 1009, () => Client.UpdateGroupAsync("jobs", "nope", new GroupOptions()));
        await AssertFailsAsync(StatusCode.InvalidArgument, 1000, () => Client.UpdateGroupAsync("jobs", "g", new GroupOptions { PriorityLevels = 40 }));
        // Peeking reads without consuming: the group's state is as it was.
        Assert.Equal([0L, 1, 2, 3, 4], (await Client.PeekAsync("jobs", 0, 100)).Select(m => m.Offset));
        Assert.Equal(1UL, (await Client.DescribeTopicAsync("jobs")).Groups.Single().AckFloor);
        await AssertFailsAsync(StatusCode.InvalidArgument, 1000, () => Client.PeekAsync("jobs", 0, 1001));
        await AssertFailsAsync(StatusCode.NotFound, 1001, () => Client.PeekAsync("no-such-topic"));
    }

    [Fact]
    public async Task Reset_by_time_starts_at_the_first_message_published_at_or_after_it()
    {
        await Client.CreateTopicAsync("events");
        await PublishAsync("events", 3);
        _time.Advance(TimeSpan.FromMinutes(10));
        await PublishAsync("events", 2);
        await Client.CreateGroupAsync("events", "g", StartAt.Latest);

        Assert.Equal(3, await Client.ResetGroupAsync("events", "g", StartAt.AtTime(Start.AddMinutes(5))));
        await using var subscription = await Client.SubscribeAsync("events", "g");
        var replayed = await Receive.ExactlyAsync(subscription, 2);
        Assert.Equal([3L, 4], replayed.Select(m => m.Offset));
        Assert.Equal(Start.AddMinutes(10).ToUnixTimeMilliseconds(), replayed[0].PublishTime.ToUnixTimeMilliseconds());
        Assert.Equal(0, await Client.ResetGroupAsync("events", "g", StartAt.Earliest));
        Assert.Equal(5, await Client.ResetGroupAsync("events", "g", StartAt.Latest));
    }

    [Fact]
    public async Task Bad_resets_and_deletes_get_their_status_and_error_code()
    {
        await Client.CreateTopicAsync("errs");
        await PublishAsync("errs", 2);
        await Client.CreateGroupAsync("errs", "g");

        await AssertFailsAsync(StatusCode.NotFound, 1009, () => Client.ResetGroupAsync("errs", "nope", StartAt.Earliest));
        await AssertFailsAsync(StatusCode.NotFound, 1009, () => Client.DeleteGroupAsync("errs", "nope"));
        await AssertFailsAsync(StatusCode.NotFound, 1001, () => Client.ResetGroupAsync("no-such-topic", "g", StartAt.Earliest));
        await AssertFailsAsync(StatusCode.OutOfRange, 1010, () => Client.ResetGroupAsync("errs", "g", StartAt.AtOffset(3)));
        await AssertFailsAsync(StatusCode.InvalidArgument, 1002, () => Client.DeleteGroupAsync("errs", "bad name"));
        var noRetention = await Assert.ThrowsAsync<RpcException>(async () =>
            await new Protocol.V1.Admin.AdminClient(Client.Channel).UpdateTopicAsync(new Protocol.V1.UpdateTopicRequest { Name = "errs" }));
        Assert.Equal((StatusCode.InvalidArgument, "1000"), (noRetention.StatusCode, noRetention.Trailers.GetValue("broker-error-code")));
        await AssertFailsAsync(StatusCode.NotFound, 1001, () => Client.PurgeTopicAsync("no-such-topic"));
        await AssertFailsAsync(StatusCode.NotFound, 1001, () => Client.UpdateTopicRetentionAsync("no-such-topic", new RetentionOptions()));

        // An existing topic keeps its own retention when created again with if_not_exists.
        Assert.False(await Client.CreateTopicAsync("errs", new RetentionOptions { MaxBytes = 1 << 20 }));
        Assert.Equal(0UL, (await Client.DescribeTopicAsync("errs")).Retention.MaxBytes);
    }

    [Fact]
    public async Task Delete_is_refused_while_consumers_are_subscribed_unless_forced_and_then_their_streams_end()
    {
        await Client.CreateTopicAsync("del");
        await PublishAsync("del", 3);
        await using var subscription = await Client.SubscribeAsync("del", "g");
        await Receive.ExactlyAsync(subscription, 3);

        await AssertFailsAsync(StatusCode.FailedPrecondition, 1011, () => Client.DeleteGroupAsync("del", "g"));
        Assert.Single((await Client.DescribeTopicAsync("del")).Groups);

        await Client.DeleteGroupAsync("del", "g", force: true);
        var ended = await Assert.ThrowsAsync<BrokerClientException>(async () => await subscription.ReceiveAsync(new CancellationTokenSource(Receive.Deadline).Token));
        Assert.Equal((StatusCode.NotFound, 1009), (ended.Status, ended.ErrorCode));
        Assert.Empty((await Client.DescribeTopicAsync("del")).Groups);
    }

    [Fact]
    public async Task Purge_drops_everything_stored_and_subscribers_go_on_with_new_messages()
    {
        await Client.CreateTopicAsync("purge");
        await PublishAsync("purge", 5);
        await using (var subscription = await Client.SubscribeAsync("purge", "g"))
        {
            await Receive.ExactlyAsync(subscription, 5);
            Assert.Equal(5, await Client.PurgeTopicAsync("purge"));
            var ended = await Assert.ThrowsAsync<BrokerClientException>(async () => await subscription.ReceiveAsync(new CancellationTokenSource(Receive.Deadline).Token));
            Assert.Equal((StatusCode.Unavailable, 1203), (ended.Status, ended.ErrorCode));
        }
        var description = await Client.DescribeTopicAsync("purge");
        Assert.Equal((5UL, 5UL, 0UL), (description.FirstOffset, description.NextOffset, description.Groups.Single().Backlog));

        await using var again = await Client.SubscribeAsync("purge", "g");
        await PublishAsync("purge", 1);
        Assert.Equal(5, Assert.Single(await Receive.ExactlyAsync(again, 1)).Offset);
        await Receive.NothingMoreAsync(again);
    }

    [Fact]
    public async Task Retention_by_age_deletes_old_messages_but_never_what_a_subscribed_consumer_has_not_acked()
    {
        await Client.CreateTopicAsync("aged", new RetentionOptions { MaxAge = TimeSpan.FromHours(1) });
        Assert.Equal(3_600_000UL, (await Client.DescribeTopicAsync("aged")).Retention.MaxAgeMs);
        await PublishAsync("aged", 4);
        await using var subscription = await Client.SubscribeAsync("aged", "live", new SubscribeOptions { VisibilityTimeout = TimeSpan.FromHours(12) });
        var held = await Receive.ExactlyAsync(subscription, 4);
        await subscription.AckAsync([held[0]], default);
        await Client.CreateGroupAsync("aged", "idle");
        _time.Advance(TimeSpan.FromHours(2));
        await PublishAsync("aged", 2);

        await _broker.Host.Store.MaintainAllAsync(default);

        // Offsets 1 to 3 are older than an hour, but the live group holds them: they stay, and its acks still work.
        var description = await Client.DescribeTopicAsync("aged");
        Assert.Equal(1UL, description.FirstOffset);
        Assert.Equal(1UL, description.Groups.Single(g => g.Name == "idle").AckFloor);
        Assert.Equal(3, (await subscription.AckAsync([.. held.Skip(1)], default)).Accepted);

        // Once acked, they go; the idle group (nobody subscribed for longer than the 5-minute grace) is moved past them
        // again, the live one is not touched.
        _time.Advance(TimeSpan.FromMinutes(6));
        await _broker.Host.Store.MaintainAllAsync(default);
        description = await Client.DescribeTopicAsync("aged");
        Assert.Equal(4UL, description.FirstOffset);
        Assert.All(description.Groups, g => Assert.Equal(4UL, g.AckFloor));
        Assert.Equal([4L, 5], (await Receive.ExactlyAsync(subscription, 2)).Select(m => m.Offset));
    }

    [Fact]
    public async Task Retention_by_size_keeps_the_log_within_max_bytes_and_can_be_changed()
    {
        await Client.CreateTopicAsync("sized");
        for (int i = 0; i < 4; i++)
            await Client.PublishAsync("sized", Enumerable.Range(0, 100).Select(_ => new OutgoingMessage(new byte[1000])));
        await _broker.Host.Store.MaintainAllAsync(default);
        Assert.Equal(0UL, (await Client.DescribeTopicAsync("sized")).FirstOffset);

        await Client.UpdateTopicRetentionAsync("sized", new RetentionOptions { MaxBytes = 100_000 });
        await _broker.Host.Store.MaintainAllAsync(default);

        var description = await Client.DescribeTopicAsync("sized");
        Assert.Equal(100_000UL, description.Retention.MaxBytes);
        Assert.InRange(description.LogBytes, 90_000UL, 100_000UL);
        Assert.InRange(description.FirstOffset, 290UL, 320UL);

        await _broker.RestartAsync();
        Assert.Equal(100_000UL, (await _broker.Client.DescribeTopicAsync("sized")).Retention.MaxBytes);
    }

    private Task PublishAsync(string topic, int count) =>
        Client.PublishAsync(topic, Enumerable.Range(0, count).Select(i => OutgoingMessage.FromText($"m{i}")));

    private static async Task AssertFailsAsync(StatusCode status, int code, Func<Task> call)
    {
        var error = await Assert.ThrowsAsync<BrokerClientException>(call);
        Assert.Equal((status, code), (error.Status, error.ErrorCode));
    }
}
