using System.Text;
using Broker.Client;
using Broker.IntegrationTests.Infrastructure;
using Grpc.Core;

namespace Broker.IntegrationTests;

/// <summary>
/// Routing on the real broker over gRPC with the SDK: groups of one topic with key patterns (direct and topic
/// delivery), a header filter and none (broadcast) each receive exactly their messages, the messages a group does not
/// want count as done for it (its backlog drains), and the filters survive a restart. A bad filter is refused.
/// </summary>
public sealed class RoutingTests
{
    [Fact]
    public async Task Each_group_receives_exactly_what_its_filter_matches_and_the_rest_counts_as_done_for_it()
    {
        await using var broker = await TestBroker.StartAsync();
        var client = broker.Client;
        await client.CreateTopicAsync("events");
        await client.CreateGroupAsync("events", "eu-orders", options: new GroupOptions { KeyPatterns = ["orders.*.eu"] });
        await client.CreateGroupAsync("events", "errors", options: new GroupOptions { KeyPatterns = ["#.error", "alerts"] });
        await client.CreateGroupAsync("events", "gold", options: new GroupOptions { HeaderFilter = new Dictionary<string, string> { ["tier"] = "gold" } });
        await client.CreateGroupAsync("events", "audit");
        var gold = new Dictionary<string, string> { ["tier"] = "gold" };
        await client.PublishAsync("events",
        [
            Keyed("orders.paid.eu"), Keyed("orders.paid.us"), Keyed("db.replica.error", gold), Keyed("alerts"),
            Keyed("orders.refunded.eu", gold), Keyed("error"), OutgoingMessage.FromText("no key"),
        ]);

        Assert.Equal(["orders.paid.eu", "orders.refunded.eu"], await ReceiveAllAsync(client, "eu-orders", 2));
        Assert.Equal(["db.replica.error", "alerts", "error"], await ReceiveAllAsync(client, "errors", 3));
        Assert.Equal(["db.replica.error", "orders.refunded.eu"], await ReceiveAllAsync(client, "gold", 2));
        Assert.Equal(7, (await ReceiveAllAsync(client, "audit", 7)).Count);
        // What a group did not want is done for it: every group's floor is at the end.
        Assert.All((await client.DescribeTopicAsync("events")).Groups, g => Assert.Equal((7UL, 0UL), (g.AckFloor, g.Backlog)));

        await broker.RestartAsync();
        var groups = (await broker.Client.DescribeTopicAsync("events")).Groups.ToDictionary(g => g.Name);
        Assert.Equal(["#.error", "alerts"], groups["errors"].Settings.Filter.KeyPatterns);
        Assert.Equal("gold", groups["gold"].Settings.Filter.Headers["tier"]);
        Assert.Null(groups["audit"].Settings.Filter);
        await broker.Client.PublishAsync("events", [Keyed("orders.shipped.eu"), Keyed("orders.shipped.us")]);
        Assert.Equal(["orders.shipped.eu"], await ReceiveAllAsync(broker.Client, "eu-orders", 1));
    }

    [Fact]
    public async Task A_filter_out_of_bounds_is_refused_and_creates_no_group()
    {
        await using var broker = await TestBroker.StartAsync();
        await broker.Client.CreateTopicAsync("events");
        var error = await Assert.ThrowsAsync<BrokerClientException>(() => broker.Client.CreateGroupAsync("events", "g",
            options: new GroupOptions { KeyPatterns = [.. Enumerable.Range(0, 101).Select(i => $"k{i}")] }));
        Assert.Equal(StatusCode.InvalidArgument, error.Status);
        Assert.Contains("at most 100 key patterns", error.Message);
        Assert.Empty((await broker.Client.DescribeTopicAsync("events")).Groups);
    }

    private static OutgoingMessage Keyed(string key, IReadOnlyDictionary<string, string>? headers = null) =>
        new(Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes(key), headers);

    private static async Task<List<string>> ReceiveAllAsync(BrokerClient client, string group, int count)
    {
        await using var subscription = await client.SubscribeAsync("events", group);
        var received = await Receive.ExactlyAsync(subscription, count);
        await Receive.NothingMoreAsync(subscription);
        Assert.Equal(count, (await subscription.AckAsync([.. received], default)).Accepted);
        return [.. received.Select(m => m.PayloadText)];
    }
}
