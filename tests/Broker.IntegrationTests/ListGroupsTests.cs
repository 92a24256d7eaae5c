using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Grpc.Core;
using Microsoft.Extensions.Time.Testing;

namespace Broker.IntegrationTests;

/// <summary>
/// Admin.ListGroups on the real broker: groups of several topics with their numbers and dead-letter topics, the topic
/// filter, NOT_FOUND for an unknown topic, and after a restart the topics not yet used named instead of opened. The
/// broker's clock is a fake one an hour behind, so every stored message is an hour old (a known oldest-unacked age),
/// and leases and nack delays never run out while the test looks.
/// </summary>
public sealed class ListGroupsTests : IAsyncLifetime
{
    private static readonly TimeSpan Behind = TimeSpan.FromHours(1);
    private TestBroker _broker = null!;

    private BrokerClient Client => _broker.Client;

    public async Task InitializeAsync() =>
        _broker = await TestBroker.StartAsync(options => options.MaintenanceIntervalMs = 24 * 3600 * 1000,
            new FakeTimeProvider(DateTimeOffset.UtcNow - Behind));

    public async Task DisposeAsync() => await _broker.DisposeAsync();

    /// <summary>
    /// orders: "writers" (3 published, 3 received, 1 acked: 2 in flight, a consumer) and "audit" (nothing received);
    /// invoices: "billing" (dead letters to billing-dead, one message nacked for an hour, the other received: one at a
    /// time, so both numbers are settled when the list is asked); orders.dlq: "inspect" (a group on a dead-letter topic:
    /// no delivery limit, so no dead-letter topic of its own). Both subscriptions stay open: a consumer leaving is
    /// counted by the broker a moment later, which the test would have to wait for.
    /// </summary>
    private async Task<(BrokerSubscription Writers, BrokerSubscription Billing)> ArrangeAsync()
    {
        await Client.CreateTopicAsync("orders");
        await Client.CreateTopicAsync("invoices");
        await Client.PublishAsync("orders", [OutgoingMessage.FromText("o0"), OutgoingMessage.FromText("o1"), OutgoingMessage.FromText("o2")]);
        await Client.PublishAsync("invoices", [OutgoingMessage.FromText("i0"), OutgoingMessage.FromText("i1")]);

        var writers = await Client.SubscribeAsync("orders", "writers");
        var received = await Receive.ExactlyAsync(writers, 3);
        Assert.Equal(1, (await writers.AckAsync(received[0])).Accepted);
        await Client.CreateGroupAsync("orders", "audit");

        var billing = await Client.SubscribeAsync("invoices", "billing", new SubscribeOptions
        {
            MaxInFlight = 1, Group = new GroupOptions { DeadLetterTopic = "billing-dead" },
        });
        Assert.Equal(1, (await billing.NackAsync(await Receive.ExactlyAsync(billing, 1), TimeSpan.FromHours(1))).Accepted);
        Assert.Equal("i1", (await Receive.ExactlyAsync(billing, 1))[0].PayloadText);
        await Client.CreateGroupAsync("orders.dlq", "inspect");
        return (writers, billing);
    }

    [Fact]
    public async Task Groups_of_every_topic_are_listed_with_their_numbers_and_a_topic_filter_narrows_them()
    {
        var (writers, billingConsumer) = await ArrangeAsync();
        await using var _ = writers;
        await using var __ = billingConsumer;

        var all = await Client.ListGroupsAsync();
        // billing-dead was created with its group and has not been used since: not open, so named, not described.
        Assert.Equal(["billing-dead"], all.UnopenedTopics);
        Assert.Equal([("invoices", "billing"), ("orders", "audit"), ("orders", "writers"), ("orders.dlq", "inspect")],
            all.Groups.Select(g => (g.Topic, g.Group.Name)));

        var billing = all.Groups.Single(g => g.Group.Name == "billing");
        Assert.Equal((2UL, 1UL, 1UL, 1U, "billing-dead"),
            (billing.Group.Backlog, billing.Group.Delayed, billing.Group.InFlight, billing.Group.Consumers, billing.DeadLetterTopic));
        var writing = all.Groups.Single(g => g.Group.Name == "writers");
        Assert.Equal((2UL, 2UL, 0UL, 1U, 1UL, "orders.dlq"),
            (writing.Group.Backlog, writing.Group.InFlight, writing.Group.Delayed, writing.Group.Consumers, writing.Group.AckFloor, writing.DeadLetterTopic));
        // Published an hour ago by the broker's clock; the answer's "now" is the wall clock, a little later still.
        Assert.InRange(writing.Group.OldestUnackedAgeMs, (ulong)Behind.TotalMilliseconds - 60_000, (ulong)Behind.TotalMilliseconds + 60_000);
        var audit = all.Groups.Single(g => g.Group.Name == "audit");
        Assert.Equal((3UL, 0UL, 0U, "orders.dlq"), (audit.Group.Backlog, audit.Group.InFlight, audit.Group.Consumers, audit.DeadLetterTopic));
        var inspect = all.Groups.Single(g => g.Group.Name == "inspect");
        Assert.Equal((0UL, 0UL, ""), (inspect.Group.Backlog, inspect.Group.OldestUnackedAgeMs, inspect.DeadLetterTopic));

        // The same numbers as DescribeTopic gives, since both read one description.
        Assert.Equal((await Client.DescribeTopicAsync("orders")).Groups.Single(g => g.Name == "writers").Backlog, writing.Group.Backlog);

        var orders = await Client.ListGroupsAsync("orders");
        Assert.Equal(["audit", "writers"], orders.Groups.Select(g => g.Group.Name));
        Assert.All(orders.Groups, g => Assert.Equal("orders", g.Topic));
        Assert.Empty(orders.UnopenedTopics);
        Assert.Empty((await Client.ListGroupsAsync("billing-dead")).Groups);  // a topic without groups: an empty answer, not an error
    }

    [Fact]
    public async Task An_unknown_topic_filter_is_not_found_and_an_invalid_one_is_refused()
    {
        var missing = await Assert.ThrowsAsync<BrokerClientException>(() => Client.ListGroupsAsync("no-such-topic"));
        Assert.Equal((StatusCode.NotFound, 1001), (missing.Status, missing.ErrorCode));
        var invalid = await Assert.ThrowsAsync<BrokerClientException>(() => Client.ListGroupsAsync("bad name!"));
        Assert.Equal(1002, invalid.ErrorCode);
    }

    [Fact]
    public async Task After_a_restart_unused_topics_are_named_not_opened_until_a_filter_names_one()
    {
        var (writers, billing) = await ArrangeAsync();
        await writers.DisposeAsync();
        await billing.DisposeAsync();
        await _broker.RestartAsync();

        var all = await Client.ListGroupsAsync();
        Assert.Empty(all.Groups);
        Assert.Equal(["billing-dead", "invoices", "orders", "orders.dlq"], all.UnopenedTopics);
        Assert.Equal(0U, (await Client.GetServerStatsAsync()).OpenTopics);  // listing opened none of them

        // Named, a topic opens and its groups come back with their state from disk.
        var orders = await Client.ListGroupsAsync("orders");
        Assert.Equal([("audit", 3UL), ("writers", 2UL)], orders.Groups.Select(g => (g.Group.Name, g.Group.Backlog)));
        var after = await Client.ListGroupsAsync();
        Assert.Equal(["audit", "writers"], after.Groups.Select(g => g.Group.Name));
        Assert.DoesNotContain("orders", after.UnopenedTopics);
    }
}
