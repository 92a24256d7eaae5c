using Broker.Client;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests;

/// <summary>
/// What the broker does with connections that send nothing, half a handshake, or garbage, and with more calls than one
/// connection carries: close the first kind after its documented timeout, keep serving everyone else, log no error;
/// spread the calls of one client over several connections.
/// </summary>
public sealed class ConnectionLimitTests : IAsyncLifetime
{
    private TestBroker _broker = null!;
    private string _topic = null!;

    public async Task InitializeAsync()
    {
        _broker = await TestBroker.StartAsync(options =>
        {
            options.HandshakeTimeoutMs = 300;
        });
        _topic = "t-" + Guid.NewGuid().ToString("N");
        await _broker.Client.CreateTopicAsync(_topic);
        await _broker.Client.PublishAsync(_topic, [OutgoingMessage.FromText("before")]);
    }

    public async Task DisposeAsync() => await _broker.DisposeAsync();

    public static TheoryData<string, byte[]> Openings => new()
    {
        { "nothing", [] },
        { "half a preface", RawConnection.Preface[..12] },
        { "23 of the preface's 24 bytes", RawConnection.Preface[..23] },
    };

    [Theory]
    [MemberData(nameof(Openings))]
    public async Task A_connection_without_a_whole_preface_is_closed_after_the_handshake_timeout(string what, byte[] opening)
    {
        await using var connection = await RawConnection.OpenAsync(_broker.Host.Address);
        await connection.SendAsync(opening);

        Assert.True(await connection.ClosedByBrokerAsync(), $"a connection that sent {what} stayed open");
        await AssertStillServingAsync();
    }

    [Theory]
    [InlineData("GET / HTTP/1.1\r\nHost: x\r\n\r\n")]
    [InlineData("\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0")]
    [InlineData("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF\xFF")]
    public async Task Garbage_on_the_port_closes_that_connection_only(string garbage)
    {
        await using var connection = await RawConnection.OpenAsync(_broker.Host.Address);
        await connection.SendAsync(garbage.Select(c => (byte)c).ToArray());

        Assert.True(await connection.ClosedByBrokerAsync());
        await AssertStillServingAsync();
    }

    [Fact]
    public async Task Random_bytes_on_the_port_close_that_connection_only()
    {
        var random = new Random(42);
        for (int i = 0; i < 5; i++)
        {
            var garbage = new byte[random.Next(1, 4096)];
            random.NextBytes(garbage);
            await using var connection = await RawConnection.OpenAsync(_broker.Host.Address);
            await connection.SendAsync(garbage);
            Assert.True(await connection.ClosedByBrokerAsync());
        }
        await AssertStillServingAsync();
    }

    [Fact]
    public async Task A_connection_that_opens_no_call_is_closed_after_the_idle_timeout()
    {
        // A broker of its own: an idle timeout this short also closes the test client's idle connection under it.
        await using var broker = await TestBroker.StartAsync(options => options.IdleConnectionTimeoutMs = 300);
        await using var connection = await RawConnection.OpenAsync(broker.Host.Address);
        await connection.SendAsync([.. RawConnection.Preface, .. RawConnection.EmptySettings]);

        Assert.True(await connection.ClosedByBrokerAsync());
        using var client = new BrokerClient(broker.Host.Address);
        Assert.True(await client.CreateTopicAsync("after-idle"));
        Assert.Empty(broker.Logs.Errors);
    }

    [Fact]
    public async Task One_client_holds_more_subscriptions_than_one_connection_carries()
    {
        // 150 open Consume calls against 100 streams per connection: without more connections the 101st would wait forever.
        using var deadline = new CancellationTokenSource(Receive.Deadline);
        var subscriptions = await Task.WhenAll(Enumerable.Range(0, 150).Select(i =>
            _broker.Client.SubscribeAsync(_topic, $"g{i}", cancellationToken: deadline.Token)));
        try
        {
            foreach (var subscription in subscriptions)
                Assert.Equal("before", (await Receive.ExactlyAsync(subscription, 1))[0].PayloadText);
            Assert.Equal(150U, (await _broker.Client.DescribeTopicAsync(_topic)).Groups.Aggregate(0U, (sum, g) => sum + g.Consumers));
        }
        finally
        {
            foreach (var subscription in subscriptions)
                await subscription.DisposeAsync();
        }
        Assert.Empty(_broker.Logs.Errors);
    }

    private async Task AssertStillServingAsync()
    {
        await _broker.Client.PublishAsync(_topic, [OutgoingMessage.FromText("after")]);
        var messages = await TopicReader.ReadAllAsync(_broker.Client, _topic, 2);
        Assert.Equal(["before", "after"], messages.Select(m => m.PayloadText));
        Assert.Empty(_broker.Logs.Errors);
    }
}
